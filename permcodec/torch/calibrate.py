"""Measured sensitivity: how much a model's loss rises when one weight matrix holds other
values, on a few batches of calibration data.

This is the data-driven loss of :func:`permcodec.format.recode.plan_depths` (``save(...,
bpw=R, calibration=batches)``, ``permcodec encode model.perm --bpw R --calibrate N``):
each matrix's bucket depth is then chosen by what it costs the model, not by its
relative error.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

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
#: The floor for the rows of a lookup table (``nn.Embedding``): a row counts only where
#: its token occurs, and a few calibration batches meet a small part of a vocabulary, so
#: every row counts for at least the table's mean (measured on all-MiniLM-L6-v2 with
#: other sentences for evaluation: output cosine at 5 bits per weight 0.99946 against
#: 0.99916 with the floor of other matrices, at 6.5 bits 0.999936 against 0.999896).
LOOKUP_FLOOR = 1.0


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
    lookups = _lookup_tables(model)
    out = {}
    for n, a in zip(names, acc, strict=True):
        rows = (a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)).mean(dim=1)
        rows = rows.cpu().numpy() * scale
        floor = LOOKUP_FLOOR if n in lookups else IMPORTANCE_FLOOR
        out[n] = np.maximum(rows, floor * rows.mean())
    return out


def _lookup_tables(model: nn.Module) -> set[str]:
    """Names of the weights of the model's ``nn.Embedding`` and ``nn.EmbeddingBag``
    modules (tables whose rows are looked up, not multiplied)."""
    return {
        f"{prefix}.weight" if prefix else "weight"
        for prefix, module in model.named_modules()
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag))
    }


#: Rows (input vectors) of one call a Hessian takes at most: a convolution over a long
#: signal sees many thousands of positions; evenly spaced ones estimate the same moments.
HESSIAN_SAMPLES = 8192
#: Columns of a diagonal block of an input Hessian (the second moments of a matrix's
#: inputs are kept in blocks of this many columns: error feedback works inside a block).
HESSIAN_BLOCK = 2048


class _Capture(TorchFunctionMode):
    """Within the block, the inputs every named weight matrix multiplies (in F.linear,
    the 1-D and 2-D convolutions without groups, LSTM cells and single-direction LSTMs)
    are added up as the second moments of its ``flatten(1)`` columns."""

    def __init__(self, params: Mapping[int, str]) -> None:
        super().__init__()
        self.by_ptr = params  # data_ptr of a parameter -> its name
        self.sums: dict[str, dict[int, torch.Tensor]] = {}
        self.count: dict[str, int] = {}

    def name_of(self, w: Any) -> str | None:
        return self.by_ptr.get(w.data_ptr()) if isinstance(w, torch.Tensor) else None

    def add(self, name: str, cols: Callable[[int, int], torch.Tensor], m: int, n: int) -> None:
        """Add the samples of columns [a, b) of the inputs, ``cols(a, b)`` (n rows),
        block by block: at most :data:`HESSIAN_SAMPLES` rows of a call, evenly spaced
        (products in float32, sums in float64)."""
        blocks = self.sums.setdefault(name, {})
        every = -(-n // HESSIAN_SAMPLES)
        for a in range(0, m, HESSIAN_BLOCK):
            x = cols(a, min(a + HESSIAN_BLOCK, m))[::every].float()
            blocks[a] = blocks.get(a, 0) + (x.T @ x).double()
        self.count[name] = self.count.get(name, 0) + -(-n // every)

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        with torch.no_grad():  # the mode is off inside its own handler
            self._seen(func, args, kwargs)
        return out

    def _seen(self, func: Any, args: tuple, kwargs: dict) -> None:
        if func is F.linear:
            name = self.name_of(args[1] if len(args) > 1 else kwargs.get("weight"))
            if name is not None:
                x = args[0].reshape(-1, args[0].shape[-1])
                self.add(name, lambda a, b: x[:, a:b], x.shape[1], x.shape[0])
        elif func in (F.conv1d, F.conv2d, torch.conv1d, torch.conv2d):
            self._conv(func, args, kwargs)
        elif func is torch.lstm_cell:
            x, hx, w_ih, w_hh = args[0], args[1], args[2], args[3]
            self._pairs(((w_ih, x), (w_hh, hx[0])))
        elif func is torch.lstm and len(args) == 9 and not args[7]:
            self._lstm(*args)

    def _pairs(self, pairs: Iterable[tuple[Any, torch.Tensor]]) -> None:
        """Add each (weight, the vectors it multiplies) pair of a named weight."""
        for w, inp in pairs:
            name = self.name_of(w)
            if name is not None:
                v = inp.reshape(-1, inp.shape[-1])
                self.add(name, lambda a, b, v=v: v[:, a:b], v.shape[1], v.shape[0])

    def _lstm(self, x: Any, hx: Any, params: Any, biases: bool, layers: int, dropout: float,
              train: bool, bidirectional: bool, batch_first: bool) -> None:  # fmt: skip
        """A single-direction (multi-layer) LSTM: each layer run alone again, to see what
        its input weights (the layer's input) and hidden weights (the previous hidden
        states) multiply."""
        per = 4 if biases else 2
        time_dim = 1 if batch_first else 0
        h0, c0 = hx
        for layer in range(layers):
            p = list(params[layer * per : (layer + 1) * per])
            state = (h0[layer : layer + 1], c0[layer : layer + 1])
            out, _, _ = torch.lstm(x, state, p, biases, 1, 0.0, False, False, batch_first)
            first = h0[layer].unsqueeze(time_dim)  # (B, H) -> the state before step 0
            prev = torch.cat([first, out.narrow(time_dim, 0, out.shape[time_dim] - 1)], time_dim)
            self._pairs(((p[0], x), (p[1], prev)))
            x = out

    def _conv(self, func: Any, args: tuple, kwargs: dict) -> None:
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        given = {**dict(zip(names, args, strict=False)), **kwargs}
        name = self.name_of(given.get("weight"))
        if name is None or given.get("groups", 1) != 1:
            return
        x, w = given["input"], given["weight"]
        dims = w.ndim - 2
        if x.ndim != dims + 2:
            return  # unbatched input
        pad = given.get("padding", 0)
        if isinstance(pad, str):
            if pad != "valid":
                return  # "same": rare; rounded to nearest
            pad = 0
        pad, stride, dil = (_pair(given.get(k, d), dims) for k, d in (
            ("padding", pad), ("stride", 1), ("dilation", 1)))  # fmt: skip
        pad = _pair(pad, dims)
        if dims == 1:
            x = F.pad(x, (pad[0], pad[0]))
            span = dil[0] * (w.shape[-1] - 1) + 1
            patches = x.unfold(2, span, stride[0])[..., :: dil[0]]  # (B, C, L, k)
            n = patches.shape[0] * patches.shape[2]
            k = w.shape[-1]

            def cols(a: int, b: int) -> torch.Tensor:
                c0, c1 = a // k, -(-b // k)
                p = patches[:, c0:c1].permute(0, 2, 1, 3).reshape(n, -1)
                return p[:, a - c0 * k : b - c0 * k]

            self.add(name, cols, w[0].numel(), n)
        else:
            k = w.shape[-2] * w.shape[-1]
            patches = F.unfold(x, w.shape[-2:], dilation=dil, padding=pad, stride=stride)
            n = patches.shape[0] * patches.shape[2]
            flat = patches.transpose(1, 2).reshape(n, -1)
            self.add(name, lambda a, b: flat[:, a:b], w[0].numel(), n)


def _pair(v: Any, dims: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * dims


def input_hessians(
    model: nn.Module, batches: Iterable[Any], names: Iterable[str], forward: Forward | None = None
) -> dict[str, list[tuple[int, np.ndarray]]]:
    """For every named parameter the model multiplies its inputs by (Linear, Conv1d and
    Conv2d weights, LSTM cell weights; called directly or through torch.nn.functional):
    the mean outer product of those inputs over the calibration ``batches``, in diagonal
    blocks of :data:`HESSIAN_BLOCK` columns (first column, block), in the column order of
    ``weight.flatten(1)``. Parameters used otherwise (embeddings, fused multi-layer LSTMs)
    are left out: their rounding errors are not fed back."""
    params = dict(model.named_parameters())
    capture = _Capture({params[n].data_ptr(): n for n in names if n in params})
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture:
            for batch in batches:
                run_model(model, batch, forward)
    finally:
        model.train(was_training)
    out = {}
    for name, blocks in capture.sums.items():
        rows = params[name].shape[0] if params[name].ndim else 1
        if params[name].numel() // max(rows, 1) != sum(b.shape[0] for b in blocks.values()):
            continue  # the inputs seen do not cover the weight's columns
        n = max(capture.count[name], 1)
        out[name] = [(a, (b / n).cpu().numpy()) for a, b in sorted(blocks.items())]
    return out


def grids_for_output_error(
    model: nn.Module,
    batches: Iterable[Any],
    mats: list[Any],
    max_error: float,
    forward: Forward | None = None,
) -> dict[str, Any]:
    """The coarsest grids (one slope for every row, :mod:`permcodec.coding.grid_rate`)
    whose model's outputs on the calibration ``batches`` stay within relative L2 error
    ``max_error`` of the outputs it gives now (bisection on the slope, from where the
    measured importances put it; at most :data:`OUTPUT_SEARCH_FITS` fits)."""
    from ..coding import grid_rate

    data = list(batches)
    params = dict(model.named_parameters())
    with torch.no_grad():
        ref = [run_model(model, b, forward).double() for b in data]
    norm = float(sum((r**2).sum() for r in ref)) ** 0.5

    def error(slope: float) -> tuple[float, dict[str, Any]]:
        grids = {m.name: grid_rate.fit(m, 2.0**slope) for m in mats}
        values = {
            n: to_torch(g.decoded, m.dtype).reshape(params[n].shape).to(params[n].device)
            for (n, g), m in zip(grids.items(), mats, strict=True)
        }
        with torch.no_grad(), holding(model, values):
            diff = sum(
                float(((run_model(model, b, forward).double() - r) ** 2).sum())
                for b, r in zip(data, ref, strict=True)
            )
        return (diff**0.5) / norm if norm else 0.0, grids

    # the importances are per unit of output energy: a slope s costs about s^2 N / 12
    numel = sum(m.numel for m in mats)
    lo = math.log2(max_error * math.sqrt(12.0 / max(numel, 1)))  # meets it, or about
    hi = lo + 6.0
    err, best = error(lo)
    while err > max_error and lo > -60.0:
        hi, lo = lo, lo - 2.0
        err, best = error(lo)
    for _ in range(OUTPUT_SEARCH_FITS):
        if hi - lo < 0.05:
            break
        mid = (lo + hi) / 2
        err, grids = error(mid)
        if err <= max_error:
            lo, best = mid, grids
        else:
            hi = mid
    return best


#: Fits the output-error search makes after it has a slope that meets the error.
OUTPUT_SEARCH_FITS = 7
