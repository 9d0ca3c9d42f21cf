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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PermcodecError
from .ops import to_torch

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
