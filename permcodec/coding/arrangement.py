"""Rows as arrangements of a multiset: value classes, the bound B, and row rebuilding.

A row's initial values, sorted by :func:`permcodec.core.dtypes.order_keys`, define classes:
class ``c`` is the c-th distinct value. A trained row is then a sequence of class
indices. Equal values are indistinguishable, so ties need no rule for the values; the
documented mapping of *weights* is that the k-th occurrence of a value (left to right)
is the k-th equal initial weight in generation order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.dtypes import FLOAT_DTYPES, order_keys
from ..core.initializers import initial_rows
from ..core.ops import NUMPY, NumpyOps
from ..errors import NotAnArrangementError


@dataclass
class RowClasses:
    """The multiset of each row of a tensor: per-row class counts and class values
    (numpy arrays, or torch tensors when built with a torch ``xp``)."""

    counts: Any  # (R, N) int64, padded with zeros
    values: Any  # (R, N) storage dtype: the value of each class
    sorted_keys: Any  # (R, m) int64
    class_of_sorted: Any  # (R, m) int64
    #: Every row holds m distinct values: class c is the c-th smallest value.
    distinct: bool = False

    @property
    def n_classes(self) -> int:
        return self.counts.shape[1]


def sort_rows(keys: Any, xp: NumpyOps = NUMPY, key_bits: int = 64) -> tuple[Any, Any]:
    """Stable argsort of each row of int64 ``keys``, and the sorted keys.

    Keys of 32-bit range (every storage dtype but float64) are sorted packed with
    their index into one int64, which a plain sort (numpy's SIMD sort, torch's sort)
    handles several times faster than a stable argsort; the packed values are
    distinct, so the order is stable. ``key_bits`` at most 32 says the keys are known
    to be in that range (the order keys of a dtype that wide), so it is not checked.
    """
    rows, m = keys.shape
    if rows * m and m <= 1 << 31:
        known = key_bits <= 32
        if known or (int(keys.min()) >= -(1 << 31) and int(keys.max()) < 1 << 31):
            packed = xp.sort_rows((keys << 32) | xp.arange(0, m))
            return packed & 0xFFFFFFFF, packed >> 32
    order = xp.argsort_stable(keys, axis=1)
    return order, xp.take_along(keys, order, axis=1)


def argsort_rows(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of each row of int64 ``keys`` (see :func:`sort_rows`)."""
    return sort_rows(keys)[0]


def row_classes(init_rows: Any, keys: Any, xp: NumpyOps = NUMPY) -> RowClasses:
    """Classes of each row of the initial values ``init_rows``, whose order keys
    (:func:`permcodec.core.dtypes.order_keys`) are ``keys``."""
    return _sorted_classes(init_rows, keys, xp)[0]


def init_classes(init_rows: np.ndarray, keys: np.ndarray) -> tuple[RowClasses, np.ndarray]:
    """:func:`row_classes` of the init and the class of each of its positions (what
    :func:`classes_of` would find for the init itself), from one sort."""
    rc, order = _sorted_classes(init_rows, keys, NUMPY)
    cls = np.empty(order.shape, dtype=np.int64)
    np.put_along_axis(cls, order, rc.class_of_sorted, axis=1)
    return rc, cls


def _sorted_classes(init_rows: Any, keys: Any, xp: NumpyOps) -> tuple[RowClasses, Any]:
    """Row classes and the sorting order of every row."""
    rows, m = keys.shape
    width = 8 * xp.itemsize(init_rows)
    order, sorted_keys = sort_rows(keys, xp, width)
    sorted_vals = xp.values_of_keys(sorted_keys, init_rows, width)
    new = xp.row_starts(sorted_keys)
    if bool(new.all()):  # every value distinct: class c is the c-th smallest value
        cls = xp.broadcast_arange(rows, m)
        return RowClasses(xp.ones_int((rows, m)), sorted_vals, sorted_keys, cls, True), order
    cls = xp.cumsum(new, axis=1) - 1
    n = int(cls[:, -1].max()) + 1 if m else 0
    counts = xp.count_rows(cls, n)
    values = xp.put_along(xp.zeros((rows, n), init_rows), cls, sorted_vals, axis=1)
    return RowClasses(counts, values, sorted_keys, cls), order  # equal keys, equal bits


def classes_of(trained_keys: np.ndarray, rc: RowClasses, name: str = "?") -> np.ndarray:
    """The class index of every trained weight; raises if a row is not an arrangement."""
    order, sorted_trained = sort_rows(trained_keys)
    bad = np.nonzero((sorted_trained != rc.sorted_keys).any(axis=1))[0]
    if bad.size:
        row = int(bad[0])
        differ = int((sorted_trained[row] != rc.sorted_keys[row]).sum())
        raise NotAnArrangementError(
            f"tensor {name!r} row {row} is not an arrangement of its initial values "
            f"({differ} of {trained_keys.shape[1]} sorted values differ; "
            f"{bad.size} bad row(s) in all); a model trained without LaPerm is stored "
            "with bpw=R or max_error=E",
            tensor=name,
            row=row,
        )
    cls = np.empty(rc.class_of_sorted.shape, dtype=np.int64)
    np.put_along_axis(cls, order, rc.class_of_sorted, axis=1)
    return cls


def rebuild(cls: np.ndarray, rc: RowClasses) -> np.ndarray:
    """Rows of values from their class indices."""
    return np.take_along_axis(rc.values, cls, axis=1)


def log2_factorials(m: int) -> np.ndarray:
    """log2(k!) for k = 0..m."""
    out = np.zeros(m + 1, dtype=np.float64)
    if m:
        out[1:] = np.cumsum(np.log2(np.arange(1, m + 1, dtype=np.float64)))
    return out


def bound_bits(counts: np.ndarray) -> float:
    """B = sum over rows of log2(m!) - sum_v log2(c_v!): the least bits any coder needs."""
    if counts.size == 0:
        return 0.0
    m = int(counts[0].sum())
    lf = log2_factorials(m)
    return float(counts.shape[0] * lf[m] - lf[counts].sum())


def is_arrangement(array: np.ndarray, dtype: str, spec: dict, key: tuple[int, int]) -> bool:
    """Whether every row of ``array`` holds exactly the values of its seeded init."""
    if dtype not in FLOAT_DTYPES:
        return False
    shape = tuple(int(d) for d in array.shape)
    init = initial_rows(spec, key, shape, dtype)
    if init.size != array.size:
        return False
    trained = order_keys(np.ascontiguousarray(array).reshape(init.shape), dtype)
    return bool((np.sort(trained, axis=1) == np.sort(order_keys(init, dtype), axis=1)).all())
