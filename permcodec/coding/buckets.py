"""Rank buckets: a row's value classes grouped into 2**b equal-population buckets.

Class ``v`` of a row (see :mod:`permcodec.arrangement`) goes to bucket
``floor(q_v * 2**b / m)``, where ``q_v`` is its first rank in the sorted row, so a class
is never split and buckets hold about ``m / 2**b`` values each. Storing only the bucket
of every weight costs about b bits per weight; the decoder then gives the positions of
each bucket that bucket's values in the order of their initial ranks
(:func:`rebuild_lossy`), so the row is still an exact arrangement of its init. Storing
also which class sits where inside each bucket (:func:`refinement`) makes the coding
lossless; it pays when trained ranks stay near initial ones, because the bucket layer
is coded with the initial bucket as context (:func:`permcodec.coding.rans.encode_ctx`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..core.plan import MAX_BITS
from .arrangement import RowClasses, argsort_rows

#: Largest context weight; also bounded by 2**31 // m so totals stay within 31 bits.
MAX_WEIGHT = 0xFFFF


@dataclass
class Buckets:
    """Bucket structure of a tensor's rows, all derived from the initial values."""

    bits: int
    class_bucket: np.ndarray  # (R, N) bucket of each class (padding classes: 0)
    counts: np.ndarray  # (R, K) values per bucket
    init_ctx: np.ndarray  # (R, m) bucket of each position's initial value
    init_cls: np.ndarray  # (R, m) class of each position's initial value

    @property
    def k(self) -> int:
        return 1 << self.bits

    @cached_property
    def init_rank(self) -> np.ndarray:
        """(R, m) stable rank of each position's initial value (ties: by position)."""
        m = self.init_cls.shape[1]
        order = argsort_rows(self.init_cls)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(m, dtype=np.int64)[None, :], axis=1)
        return rank


def class_buckets(rc: RowClasses, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The bucket of every class (R, N) and the values per bucket (R, K), from the row
    classes alone; rows of distinct values share one table (a broadcast view)."""
    rows, m = rc.sorted_keys.shape
    k = 1 << bits
    if rc.distinct:
        row_bucket = (np.arange(m, dtype=np.int64) * k) // max(m, 1)
        counts = np.broadcast_to(np.bincount(row_bucket, minlength=k), (rows, k)).copy()
        return np.broadcast_to(row_bucket, (rows, m)), counts
    first_rank = np.zeros_like(rc.counts)
    np.cumsum(rc.counts[:, :-1], axis=1, out=first_rank[:, 1:])
    class_bucket = (first_rank * k) // max(m, 1)
    class_bucket[rc.counts == 0] = 0
    flat = (np.arange(rows, dtype=np.int64)[:, None] * k + class_bucket).reshape(-1)
    counts = np.bincount(flat, weights=rc.counts.reshape(-1), minlength=rows * k)
    return class_bucket, counts.astype(np.int64).reshape(rows, k)


def bucketize(rc: RowClasses, init_cls: np.ndarray, bits: int) -> Buckets:
    """Buckets of every class and position, from the row classes of the init."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")
    class_bucket, counts = class_buckets(rc, bits)
    init_ctx = _bucket_of(class_bucket, init_cls)
    return Buckets(bits, class_bucket, counts, init_ctx, init_cls)


def _bucket_of(class_bucket: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """The bucket of every class index in ``cls`` (R, m)."""
    if class_bucket.strides[0] == 0 and class_bucket.shape[0]:  # one table for all rows
        return class_bucket[0][cls]
    return np.take_along_axis(class_bucket, cls, axis=1)


def symbols(cls: np.ndarray, bk: Buckets) -> np.ndarray:
    """The bucket of every weight, from its class."""
    return _bucket_of(bk.class_bucket, cls)


def sorted_values(rc: RowClasses) -> np.ndarray:
    """Each row's initial values in ascending order (R, m)."""
    return np.take_along_axis(rc.values, rc.class_of_sorted, axis=1)


def rebuild_lossy_cls(sym: np.ndarray, bk: Buckets, rc: RowClasses) -> np.ndarray:
    """Classes of the row the decoder builds from buckets alone: inside a bucket,
    positions take the bucket's values in the order of their initial ranks."""
    m = sym.shape[1]
    order = argsort_rows(sym * m + bk.init_rank)
    cls = np.empty_like(order)
    np.put_along_axis(cls, order, rc.class_of_sorted, axis=1)
    return cls


def refinement(cls: np.ndarray, sym: np.ndarray, bk: Buckets) -> tuple[np.ndarray, np.ndarray]:
    """The classes in bucket-major order and the remaining total at each step.

    Row positions are visited bucket by bucket (ascending position inside a bucket);
    at each step the model only has the classes of the current bucket left.
    """
    order = argsort_rows(sym)
    seq = np.take_along_axis(cls, order, axis=1)
    return seq, segment_totals(np.take_along_axis(sym, order, axis=1), bk.counts)


def segment_totals(sym_sorted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Remaining count of the current bucket at every step of a bucket-major row, from
    the values per bucket ``counts`` (R, K)."""
    ends = np.cumsum(counts, axis=1)
    j = np.arange(sym_sorted.shape[1], dtype=np.int64)[None, :]
    return np.take_along_axis(ends, sym_sorted, axis=1) - j


def bucket_major_totals(counts: np.ndarray) -> np.ndarray:
    """:func:`segment_totals` of every row's symbols in bucket-major order, which are
    each bucket's index repeated by its count: from ``counts`` (R, K) alone."""
    rows, m = counts.shape[0], int(counts[0].sum()) if counts.shape[0] else 0
    ends = np.cumsum(counts, axis=1)
    steps = np.repeat(ends.reshape(-1), counts.reshape(-1)).reshape(rows, m)
    return steps - np.arange(m, dtype=np.int64)[None, :]


def unrefine(seq: np.ndarray, sym: np.ndarray) -> np.ndarray:
    """Inverse of :func:`refinement`: classes in position order."""
    small = sym.astype(np.uint8) if sym.size and sym.min() >= 0 and sym.max() < 256 else sym
    order = np.argsort(small, axis=1, kind="stable")  # numpy radix-sorts 8-bit keys
    cls = np.empty_like(seq)
    np.put_along_axis(cls, order, seq, axis=1)
    return cls


def max_weight(m: int) -> int:
    """Largest context weight allowed for rows of ``m`` values."""
    return int(min(MAX_WEIGHT, (1 << 31) // max(m, 1)))


def fit_weights(sym: np.ndarray, ctx: np.ndarray, bits: int) -> np.ndarray:
    """Context weights from the histogram of bucket moves (trained - initial)."""
    k = 1 << bits
    hist = np.bincount((sym - ctx + (k - 1)).reshape(-1), minlength=2 * k - 1)
    top = max_weight(sym.shape[1])
    scaled = np.round(hist.astype(np.float64) * top / max(int(hist.max()), 1))
    return np.clip(scaled, 1, top).astype(np.int64)


def ctx_cost_estimate(sym: np.ndarray, ctx: np.ndarray, weights: np.ndarray, k: int) -> float:
    """Bits of the bucket layer under the static part of the context model (an upper
    estimate: the coder also uses the remaining counts)."""
    idx = np.arange(k)[None, :] - np.arange(k)[:, None] + (k - 1)
    table = weights[idx].astype(np.float64)
    logp = np.log2(table) - np.log2(table.sum(axis=1, keepdims=True))
    return float(-logp[ctx, sym].sum())


def table_bits(weights: np.ndarray | None) -> float:
    """Header cost of a weights table (msgpack ints, about 3 bytes each)."""
    return 0.0 if weights is None else 24.0 * weights.shape[0]
