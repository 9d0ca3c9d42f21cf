"""Measured sensitivity: how much a model's loss rises when one weight matrix holds other
values, on a few batches of calibration data.

This is the data-driven loss of :func:`permcodec.format.recode.plan_depths` (``save(...,
bpw=R, calibration=batches)``, ``permcodec encode model.perm --bpw R --calibrate N``):
each matrix's bucket depth is then chosen by what it costs the model, not by its
relative error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PermcodecError
from .ops import to_torch

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Forward = Callable[[nn.Module, Any], torch.Tensor]


def loss_increase(
    model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn | None = None
) -> Callable[[str, np.ndarray], float]:
    """``loss(name, values)``: the rise of ``model``'s mean loss over ``batches``
    (``(inputs, targets)`` pairs, kept in memory and moved to the model's device;
    ``loss_fn`` defaults to cross-entropy) in eval mode when parameter ``name`` alone
    holds ``values`` (its numpy storage array). The model is left as it was."""
    params = dict(model.named_parameters())
    device = next(iter(params.values())).device if params else torch.device("cpu")
    data = [(x.to(device), y.to(device)) for x, y in batches]
    if not data:
        raise PermcodecError("calibration needs at least one batch of (inputs, targets)")
    fn = loss_fn or F.cross_entropy

    @torch.no_grad()
    def mean_loss() -> float:
        was_training = model.training
        model.eval()
        try:
            total = count = 0.0
            for x, y in data:
                value = fn(model(x).float(), y)
                if value.numel() != 1:
                    raise PermcodecError(
                        f"calibration: loss_fn must return one number, got shape "
                        f"{tuple(value.shape)}"
                    )
                total += float(value) * len(y)
                count += len(y)
            return total / count
        finally:
            model.train(was_training)

    base = mean_loss()

    def loss(name: str, values: np.ndarray) -> float:
        if name not in params:
            raise PermcodecError(f"calibration: the model has no parameter {name!r}")
        p = params[name]
        dtype = "bfloat16" if p.dtype == torch.bfloat16 else str(values.dtype)
        with holding(model, {name: to_torch(values, dtype).reshape(p.shape)}):
            return mean_loss() - base

    return loss


@contextlib.contextmanager
def holding(model: nn.Module, values: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Within the block, the named parameters of ``model`` hold ``values``; afterwards,
    even after an error, what they held before."""
    params = dict(model.named_parameters())
    kept = {}
    try:
        with torch.no_grad():
            for name, v in values.items():
                kept[name] = params[name].detach().clone()
                params[name].copy_(v)
        yield
    finally:
        with torch.no_grad():
            for name, v in kept.items():
                params[name].copy_(v)


#: Random directions of the outputs each calibration batch is probed with.
PROBES = 4
#: No row counts for less than this share of its matrix's mean importance: rows the
#: calibration data hardly used may matter to other inputs (measured on crepe-tiny with
#: other voices for calibration than for evaluation: without a floor, 3 bits per weight
#: gave an output cosine of 0.82; with 0.01, 0.9988; with 0.1, 0.9993).
IMPORTANCE_FLOOR = 0.1


def run_model(model: nn.Module, batch: Any, forward: Forward | None = None) -> torch.Tensor:
    """The model's outputs on one calibration batch, flattened into one float tensor:
    ``forward(model, batch)``, else ``model(batch)``, ``model(*batch)`` for a tuple or
    list and ``model(**batch)`` for a dict; tuples of outputs are concatenated."""
    if forward is not None:
        out = forward(model, batch)
    elif isinstance(batch, (tuple, list)):
        out = model(*batch)
    elif isinstance(batch, Mapping):
        out = model(**batch)
    else:
        out = model(batch)
    parts = out if isinstance(out, (tuple, list)) else [out]
    flat = [p.reshape(-1).float() for p in parts if isinstance(p, torch.Tensor)]
    if not flat:
        raise PermcodecError("calibration: the model's outputs hold no tensor")
    return torch.cat(flat)


def row_importance(
    model: nn.Module, batches: Iterable[Any], names: Iterable[str], forward: Forward | None = None
) -> dict[str, np.ndarray]:
    """For every named parameter, per row (``flatten(1)``): the mean over the row of
    E[(d(v . y) / dw)**2], with y the model's outputs on the calibration ``batches`` and v
    random normal directions (:data:`PROBES` per batch). That is the diagonal of the
    Gauss-Newton matrix of the squared output error: what a unit of squared error in a
    weight costs the outputs (cross terms between samples vanish in expectation, so one
    backward pass per probe covers a whole batch). In eval mode; the model is left as it
    was."""
    params = dict(model.named_parameters())
    names = list(names)
    missing = [n for n in names if n not in params]
    if missing:
        raise PermcodecError(f"calibration: the model has no parameter(s) {missing[:3]}")
    data = list(batches)
    if not data:
        raise PermcodecError("calibration needs at least one batch of inputs")
    targets = [params[n] for n in names]
    acc = [torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in targets]
    gen = torch.Generator().manual_seed(0)
    was_training = model.training
    flags = [p.requires_grad for p in targets]
    energy = 0.0
    model.eval()
    try:
        for p in targets:
            p.requires_grad_(True)
        with torch.enable_grad():
            for batch in data:
                for _ in range(PROBES):
                    y = run_model(model, batch, forward)
                    v = torch.randn(y.shape, generator=gen).to(y.device)
                    grads = torch.autograd.grad((y * v).sum(), targets, allow_unused=True)
                    for a, g in zip(acc, grads, strict=True):
                        if g is not None:
                            a += g.double() ** 2
                energy += float((y.detach().double() ** 2).sum())
    finally:
        for p, flag in zip(targets, flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    scale = 1.0 / (PROBES * max(energy, 1e-300))  # per unit of output energy
    out = {}
    for n, a in zip(names, acc, strict=True):
        rows = (a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)).mean(dim=1)
        rows = rows.cpu().numpy() * scale
        out[n] = np.maximum(rows, IMPORTANCE_FLOOR * rows.mean())
    return out
