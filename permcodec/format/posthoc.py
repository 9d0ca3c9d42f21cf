"""Compressing a model that was not trained by permutation: which tensors go on a grid,
how important each of their rows is, and the grids that meet a rate or an error.

Weight matrices (floating-point tensors of two or more dimensions with at least
:data:`MIN_GRID_VALUES` values and more than :data:`EXACT_DISTINCT` distinct values)
go on grids (``grid-rans``); everything else (biases, norm layers, buffers, masks, small
matrices) is stored exactly. Without calibration data every weight counts alike; with
it, each row counts as much as it moves the model's outputs
(:func:`permcodec.torch.calibrate.row_importance`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import BinaryIO

import msgpack
import numpy as np

from ..coding import grid_rans, grid_rate
from ..coding.encoder import encode_tensor, grid_lanes
from ..coding.grid_fit import Hessian
from ..coding.grid_rans import Grid
from ..coding.rate import CONTAINER_BYTES
from ..core.dtypes import FLOAT_DTYPES, TensorItem, as_float64
from ..errors import LossyWarning, PermcodecError
from .writer import write_file

#: Matrices smaller than this stay exact: a grid's tables would cost more than it saves.
MIN_GRID_VALUES = 256
#: Tensors with at most this many distinct values (masks, one-hot tables, tensors that
#: are already quantized) stay exact: zstd stores them in a few bits per value.
EXACT_DISTINCT = 256
#: The relative error every weight matrix keeps when no rate or error is named.
DEFAULT_MAX_ERROR = 1e-3


def is_weight_matrix(array: np.ndarray, dtype: str) -> bool:
    """Whether the file format counts a tensor among the weight matrices (the rate's
    denominator): floating point, two or more dimensions."""
    return dtype in FLOAT_DTYPES and array.ndim >= 2


def grid_candidates(items: Sequence[TensorItem]) -> list[str]:
    """Names of the weight matrices that go on a grid."""
    out = []
    for name, array, dtype in items:
        if not is_weight_matrix(array, dtype) or array.size < MIN_GRID_VALUES:
            continue
        values = as_float64(array, dtype)
        if not np.isfinite(values).all():
            continue  # inf and nan stay exact
        if _few_values(array):
            continue
        out.append(name)
    return out


def _few_values(array: np.ndarray) -> bool:
    """At most :data:`EXACT_DISTINCT` distinct values (a sample decides most tensors)."""
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // 4096)]
    if np.unique(sample).size > EXACT_DISTINCT:
        return False
    return np.unique(flat).size <= EXACT_DISTINCT


def matrices(
    items: Sequence[TensorItem],
    names: Sequence[str],
    importance: Mapping[str, np.ndarray] | None = None,
    hessians: Mapping[str, Hessian] | None = None,
) -> list[grid_rate.Matrix]:
    """The :class:`grid_rate.Matrix` of each named item: its rows as important as
    ``importance`` says (measured), else every weight alike (the split of bits that
    loses the least squared error over all weights: one step for every row of every
    matrix; measured on the benchmark's models, it beat weighing each matrix by its
    relative error). A measured matrix whose importance is not finite (a gradient
    through sqrt(0), say) is weighed like the others, by their median. A matrix with
    ``hessians`` (its inputs' second moments) has its rounding errors fed back."""
    by_name = {n: (a, dt) for n, a, dt in items}
    imp = dict(importance or {})
    ok = [float(np.mean(imp[n])) for n in names if n in imp and np.isfinite(imp[n]).all()]
    typical = float(np.median(ok)) if ok else 1.0
    out = []
    for n in names:
        rows = by_name[n][0].shape[0] if by_name[n][0].ndim else 1
        row_imp = imp.get(n)
        if row_imp is None or not np.isfinite(row_imp).all():
            row_imp = np.full(rows, typical)
        out.append(grid_rate.Matrix(n, *by_name[n], row_imp, (hessians or {}).get(n)))
    return out


def entry_bits(name: str, array: np.ndarray, dtype: str, grid: Grid | None) -> float:
    """Bits a tensor adds to a file: payload and header entry (offset and length at
    their widest)."""
    if grid is None:
        enc = encode_tensor(name, array, dtype, None)
        fields, payload = enc.fields, enc.payload
    else:  # what encode_tensor writes, without measuring the error
        fields, payload = grid_rans.encode(grid, grid_lanes(grid))
        fields = {"name": name, "shape": list(array.shape), "dtype": dtype, **fields}
    wide = 2**32 - 1
    entry = {**fields, "digest": b"\0" * 16, "payload_digest": b"\0" * 16}
    entry.update(offset=wide, length=wide, rel_error=0.0)
    return 8.0 * (len(payload) + len(msgpack.packb(entry, use_bin_type=True)))


def grids_for_rate(
    items: Sequence[TensorItem],
    bpw: float,
    importance: Mapping[str, np.ndarray] | None = None,
    hessians: Mapping[str, Hessian] | None = None,
) -> dict[str, Grid]:
    """Grids of the weight matrices of ``items`` that keep all weight matrices (those on
    grids and those stored exactly), container included, within ``bpw`` bits per weight."""
    if not bpw > 0:
        raise PermcodecError(f"bpw must be a positive number of bits per weight, got {bpw!r}")
    names = grid_candidates(items)
    weights = [(n, a, dt) for n, a, dt in items if is_weight_matrix(a, dt)]
    numel = sum(a.size for _, a, _ in weights)
    fixed = 8.0 * CONTAINER_BYTES + sum(
        entry_bits(n, a, dt, None) for n, a, dt in weights if n not in names
    )
    budget = bpw * numel - fixed
    by_name = {n: (a, dt) for n, a, dt in items}

    def measure(name: str, grid: Grid) -> float:
        return entry_bits(name, *by_name[name], grid)

    mats = matrices(items, names, importance, hessians)
    try:
        return grid_rate.fit_to_rate(mats, budget, measure)
    except ValueError:
        need = (fixed + sum(entry_bits(n, *by_name[n], grid_rate.fit(m, math.inf)) for n, m in (
            (m.name, m) for m in mats))) / max(numel, 1)  # fmt: skip
        raise PermcodecError(
            f"{bpw} bits per weight is too few for these weight matrices: their coarsest "
            f"grids need {need:.3f}"
        ) from None


def grids_for_error(
    items: Sequence[TensorItem],
    max_error: float,
    importance: Mapping[str, np.ndarray] | None = None,
    hessians: Mapping[str, Hessian] | None = None,
) -> dict[str, Grid]:
    """The coarsest grid of each weight matrix of ``items`` whose relative L2 error is at
    most ``max_error``."""
    if not 0 < max_error < 1:
        raise PermcodecError(f"the relative error must be in (0, 1), got {max_error!r}")
    names = grid_candidates(items)
    mats = matrices(items, names, importance, hessians)
    return {m.name: grid_rate.fit_to_error(m, max_error) for m in mats}


def choose_grids(
    items: Sequence[TensorItem],
    bpw: float | None = None,
    max_error: float | None = None,
    lossless: bool = False,
    importance: Mapping[str, np.ndarray] | None = None,
    hessians: Mapping[str, Hessian] | None = None,
) -> dict[str, Grid]:
    """The grids of a model trained without permutation: within ``bpw`` bits per weight,
    each matrix within ``max_error``, none with ``lossless``, else each matrix within
    :data:`DEFAULT_MAX_ERROR`."""
    if sum(x is not None and x is not False for x in (bpw, max_error, lossless or None)) > 1:
        raise PermcodecError("give one of bpw=, max_error= and lossless=True")
    if lossless:
        return {}
    if bpw is not None:
        return grids_for_rate(items, bpw, importance, hessians)
    error = DEFAULT_MAX_ERROR if max_error is None else max_error
    return grids_for_error(items, error, importance, hessians)


def write_trained(
    path: str | os.PathLike[str] | BinaryIO,
    items: Sequence[TensorItem],
    metadata: Mapping[str, str] | None = None,
    bpw: float | None = None,
    max_error: float | None = None,
    lossless: bool = False,
    importance: Mapping[str, np.ndarray] | None = None,
    hessians: Mapping[str, Hessian] | None = None,
) -> dict[str, float]:
    """Write a model trained without permutation (see :func:`choose_grids`); returns the
    relative L2 error of every tensor that is not stored exactly."""
    grids = choose_grids(items, bpw, max_error, lossless, importance, hessians)
    return write_grids(path, items, metadata, grids)


def write_grids(
    path: str | os.PathLike[str] | BinaryIO,
    items: Sequence[TensorItem],
    metadata: Mapping[str, str] | None,
    grids: Mapping[str, Grid],
) -> dict[str, float]:
    """Write ``items`` with the tensors of ``grids`` on them, the rest exact; returns
    the relative L2 error of every tensor that is not stored exactly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LossyWarning)  # asked for: reported as the result
        header = write_file(path, items, None, dict(metadata or {}), grids=dict(grids))
    return {e["name"]: float(e["rel_error"]) for e in header["tensors"] if "rel_error" in e}
