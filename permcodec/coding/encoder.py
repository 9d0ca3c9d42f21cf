"""Choosing how each tensor is stored: the encoder side of every coding.

A tensor outside the plan is stored exactly (``raw-zstd`` or ``raw``). A seeded tensor
must be an exact arrangement of its initialization; it is coded losslessly
(``row-rans``, or ``bucket-rans`` with ``exact`` when its bucket moves are predictable
enough to pay), or with ``bits`` as its rank buckets only (lossy unless the rows are
already in bucketed form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.dtypes import FLOAT_DTYPES, as_float64, c_contiguous, order_keys, storage_dtype
from ..core.initializers import check_resolved, fans, initial_rows, row_shape
from ..core.plan import TensorPlan
from ..errors import PlanError
from . import arrangement, bucket_rans, grid_rans, level_rans, rate, raw, row_rans
from .base import MAX_ROW

#: Levels tensors of at most this many values are also coded as multisets, and those
#: kept where they are smaller by more than LEVEL_SPEED_WORTH (the tables and lane states
#: of level-rans are a larger part of a small tensor).
LEVEL_COMPARE_VALUES = 1 << 16
#: How much larger a small level-rans tensor may be and still be chosen, for its speed.
LEVEL_SPEED_WORTH = 1.02
#: Values per lane of a ``grid-rans`` tensor (lanes decode side by side).
GRID_LANE_VALUES = 1 << 16


@dataclass
class Encoded:
    """One tensor, coded: its entry fields (in header order), its payload, the array a
    decoder will rebuild from it, and the relative L2 error of that array when it is
    not the input exactly (or an ``original`` was given)."""

    fields: dict[str, Any]
    payload: bytes
    decoded: np.ndarray
    rel_error: float | None = None


def encode_tensor(
    name: str,
    array: np.ndarray,
    dtype: str,
    tp: TensorPlan | None,
    bits: int | None = None,
    original: np.ndarray | None = None,
    grid: grid_rans.Grid | None = None,
) -> Encoded:
    """Code one tensor (seeded per ``tp``, rank buckets only with ``bits``; on ``grid``,
    a tensor outside the plan put on a grid by :mod:`permcodec.coding.grid_fit`); a lossy
    result's ``rel_error`` is measured against ``original`` (default: ``array``)."""
    array = c_contiguous(array, storage_dtype(dtype))
    shape = tuple(int(d) for d in array.shape)
    fields: dict[str, Any] = {"name": name, "shape": list(shape), "dtype": dtype}
    decoded = array
    if grid is not None:
        if tp is not None:
            raise PlanError(f"tensor {name!r} is seeded; it cannot also go on a grid")
        extra, payload = grid_rans.encode(grid, grid_lanes(grid))
        fields.update(extra)
        decoded = grid.decoded
    elif tp is None:
        fields["coding"], payload = raw.encode(array)
    else:
        _check_plan_fits(name, tp, shape, dtype)
        rows, m = row_shape(shape, tp.spec["granularity"])
        init = initial_rows(tp.spec, tp.key, shape, dtype)
        rc, init_cls = arrangement.init_classes(init, order_keys(init, dtype))
        cls = arrangement.classes_of(order_keys(array.reshape(rows, m), dtype), rc, name)
        fields.update(spec=dict(tp.spec), key=list(tp.key))
        if bits is not None and rows * m:
            extra, payload, cls = bucket_rans.encode_lossy(cls, rc, init_cls, bits)
            decoded = arrangement.rebuild(cls, rc).reshape(shape)
        else:
            extra, payload = _encode_lossless(cls, rc, init_cls, tp.spec["kind"] == "levels")
        fields.update(extra)
    rel_error = None
    if decoded is not array or original is not None:
        ref = original if original is not None else array
        rel_error = relative_error(ref, decoded, dtype)
        if grid is not None:  # 6 digits: the last bits of a norm vary with the BLAS
            rel_error = float(f"{rel_error:.6g}")
    return Encoded(fields, payload, decoded, rel_error)


def grid_lanes(grid: grid_rans.Grid) -> int:
    """Lanes of a ``grid-rans`` tensor: one per :data:`GRID_LANE_VALUES` values, at most
    one per row."""
    rows, m = grid.symbols.shape
    return max(1, min(rows, rows * m // GRID_LANE_VALUES))


def _encode_lossless(
    cls: np.ndarray, rc: arrangement.RowClasses, init_cls: np.ndarray, levels: bool = False
) -> tuple[dict[str, Any], bytes]:
    """``level-rans`` for a levels tensor (a table lookup per weight to decode), unless
    it would take more than rate control allows for the tensor (rows arranged at
    random) or the tensor is small and a multiset coding is smaller; else ``row-rans``,
    or exact ``bucket-rans`` when the context model saves bits."""
    bound = arrangement.bound_bits(rc.counts)
    if not levels or not cls.size:
        return _encode_multiset(cls, rc, init_cls, bound)
    coded = level_rans.encode(cls, init_cls, rc.n_classes, bound)
    if 8 * len(coded[1]) > rate.payload_allowance(bound):  # what rate control counted on
        return _encode_multiset(cls, rc, init_cls, bound)
    if cls.size <= LEVEL_COMPARE_VALUES:  # tables and lane states weigh most here
        other = _encode_multiset(cls, rc, init_cls, bound)
        coded = other if len(other[1]) * LEVEL_SPEED_WORTH < len(coded[1]) else coded
    return coded


def _encode_multiset(
    cls: np.ndarray, rc: arrangement.RowClasses, init_cls: np.ndarray, bound: float
) -> tuple[dict[str, Any], bytes]:
    """``row-rans``, or exact ``bucket-rans`` when the context model saves bits."""
    context = bucket_rans.choose_refine_bits(cls, rc, init_cls, bound)
    if context is None:
        return row_rans.encode(cls, rc, bound)
    return bucket_rans.encode_exact(cls, rc, context, bound)


def _check_plan_fits(name: str, tp: TensorPlan, shape: tuple[int, ...], dtype: str) -> None:
    if dtype not in FLOAT_DTYPES:
        raise PlanError(f"tensor {name!r} has dtype {dtype}; only {FLOAT_DTYPES} can be seeded")
    check_resolved(tp.spec)
    if row_shape(shape, tp.spec["granularity"])[1] > MAX_ROW:
        raise PlanError(f"tensor {name!r} has rows longer than {MAX_ROW} values")
    if (tp.spec.get("fan_in"), tp.spec.get("fan_out")) != fans(shape):
        raise PlanError(
            f"tensor {name!r} has shape {list(shape)}, which does not match its "
            "plan (the fans differ)"
        )


def relative_error(reference: np.ndarray, approx: np.ndarray, dtype: str) -> float:
    """||reference - approx|| / ||reference|| (0.0 when both are zero)."""
    ref, app = as_float64(reference, dtype), as_float64(approx, dtype)
    diff = float(np.linalg.norm((ref - app).ravel()))
    norm = float(np.linalg.norm(ref.ravel()))
    return diff / norm if norm else (0.0 if diff == 0 else math.inf)
