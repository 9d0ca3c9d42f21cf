"""Rows as arrangements of a multiset: value classes, the bound B, and row rebuilding.

A row's initial values, sorted by :func:`permcodec.dtypes.order_keys`, define classes:
class ``c`` is the c-th distinct value. A trained row is then a sequence of class
indices. Equal values are indistinguishable, so ties need no rule for the values; the
documented mapping of *weights* is that the k-th occurrence of a value (left to right)
is the k-th equal initial weight in generation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import NotAnArrangementError


@dataclass
class RowClasses:
    """The multiset of each row of a tensor: per-row class counts and class values."""

    counts: np.ndarray  # (R, N) int64, padded with zeros
    values: np.ndarray  # (R, N) storage dtype: the value of each class
    sorted_keys: np.ndarray  # (R, m) int64
    class_of_sorted: np.ndarray  # (R, m) int64
    #: Every row holds m distinct values: class c is the c-th smallest value.
    distinct: bool = False

    @property
    def n_classes(self) -> int:
        return self.counts.shape[1]


def sort_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable argsort of each row of int64 ``keys``, and the sorted keys.

    Keys of 32-bit range (every storage dtype but float64) are sorted packed with
    their index into one int64, which numpy's SIMD sort handles several times faster
    than a stable argsort; the packed values are distinct, so the order is stable.
    """
    m = keys.shape[1]
    if keys.size and m <= 1 << 31:
        lo, hi = int(keys.min()), int(keys.max())
        if lo >= -(1 << 31) and hi < 1 << 31:
            packed = (keys << 32) | np.arange(m, dtype=np.int64)
            packed.sort(axis=1)
            return packed & 0xFFFFFFFF, packed >> 32
    order = np.argsort(keys, axis=1, kind="stable")
    return order, np.take_along_axis(keys, order, axis=1)


def argsort_rows(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of each row of int64 ``keys`` (see :func:`sort_rows`)."""
    return sort_rows(keys)[0]


def row_classes(init_rows: np.ndarray, keys: np.ndarray) -> RowClasses:
    """Classes of each row of the initial values ``init_rows`` (with order ``keys``)."""
    rows, m = keys.shape
    order, sorted_keys = sort_rows(keys)
    sorted_vals = np.take_along_axis(init_rows, order, axis=1)
    new = np.ones((rows, m), dtype=bool)
    new[:, 1:] = sorted_keys[:, 1:] != sorted_keys[:, :-1]
    if new.all():  # every value distinct: class c is the c-th smallest value
        cls = np.broadcast_to(np.arange(m, dtype=np.int64), (rows, m))
        return RowClasses(np.ones((rows, m), np.int64), sorted_vals, sorted_keys, cls, True)
    cls = np.cumsum(new, axis=1, dtype=np.int64) - 1
    n = int(cls[:, -1].max()) + 1 if m else 0
    flat = (np.arange(rows, dtype=np.int64)[:, None] * n + cls).reshape(-1)
    counts = np.bincount(flat, minlength=rows * n).reshape(rows, n)
    values = np.zeros((rows, n), dtype=init_rows.dtype)
    np.put_along_axis(values, cls, sorted_vals, axis=1)  # equal keys: equal bits
    return RowClasses(counts, values, sorted_keys, cls)


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
            f"{bad.size} bad row(s) in all)",
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
