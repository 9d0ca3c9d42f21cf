"""Host side of the compiled rANS kernels: input checks and the calls into a backend.

A backend (:mod:`permcodec.kernels.rans_c`, built by Cython) provides the kernels;
:class:`RansKernels` checks that an input lies in their domain
and returns None where it does not, so that :mod:`permcodec.coding.rans` runs the numpy
reference instead (which gives the same result or raises the same error).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .contract import ENDS_EARLY, OK, STATE_LOW, lane_bounds, raise_for


def _plain(a: np.ndarray, dtype: type) -> np.ndarray:
    """C-contiguous and writeable, as the kernels' typed memoryviews take them."""
    return np.require(a, dtype=dtype, requirements=["C", "W"])


def _index_array(a: Any) -> np.ndarray | None:
    """``a`` as int64 if its dtype indexes like int64 in the reference, else None."""
    if not isinstance(a, np.ndarray):
        return None
    kind, size = a.dtype.kind, a.dtype.itemsize
    if kind == "i" or (kind == "u" and size <= 4):
        return _plain(a, np.int64)
    return None


def _int64_array(a: Any) -> np.ndarray | None:
    """``a`` if it is an int64 array (the reference's arithmetic type), else None."""
    if isinstance(a, np.ndarray) and a.dtype == np.int64:
        return _plain(a, np.int64)
    return None


def _in_range(a: np.ndarray, hi: int) -> bool:
    return a.size == 0 or (int(a.min()) >= 0 and int(a.max()) < hi)


def _word_capacity(rows: int, m: int) -> int:
    """First guess at the word count (about 8 bits a symbol; the buffer grows)."""
    return rows * m // 4 + 64


def _lanes(lanes: Any) -> int | None:
    if isinstance(lanes, (int, np.integer)) and not isinstance(lanes, bool) and lanes >= 1:
        return int(lanes)
    return None


def _states(states: Any) -> np.ndarray | None:
    """Lane states as int64, or None where the reference must judge them."""
    if not isinstance(states, np.ndarray) or states.ndim != 1 or states.shape[0] == 0:
        return None
    if states.dtype != np.uint64:
        return None
    if ((states < STATE_LOW) | (states >= np.uint64(1 << 63))).any():
        return None  # the reference raises "coder state out of range"
    return states.astype(np.int64)


def _words(stream: Any) -> np.ndarray | None:
    if isinstance(stream, np.ndarray) and stream.ndim == 1 and stream.dtype == np.uint32:
        return _plain(stream, np.uint32)
    return None


def _distinct_rows(counts: np.ndarray, m: int) -> np.ndarray:
    """Which rows hold m distinct values (m classes of one value each): the common
    case of dense float rows, which the kernels code without a tree."""
    if counts.shape[1] != m:
        return np.zeros(counts.shape[0], dtype=np.bool_)
    return (counts == 1).all(axis=1)


def _consistent(counts: np.ndarray, m: int, distinct: np.ndarray | None = None) -> bool:
    """Whether every row's counts lie in [0, m] and sum to m (always so for counts a
    decoder derives from the init), which the mixed and row decoders rely on (the
    bound keeps the sum from wrapping around). Rows known ``distinct`` (m ones) are
    consistent and not checked again."""
    if distinct is not None:
        if distinct.all():
            return True
        counts = counts[~distinct]
    return (
        int(counts.min()) >= 0 and int(counts.max()) <= m and bool((counts.sum(axis=1) == m).all())
    )


def _bounded(counts: np.ndarray) -> bool:
    """Whether counts lie in [0, 2**31) with row sums below 2**31, so that no scaled
    interval leaves 63 bits (the reference's int64 arithmetic would wrap, and C's
    truncating division differs from numpy's flooring on what wrapped negative)."""
    if counts.size == 0:
        return True
    if int(counts.min()) < 0 or int(counts.max()) >= 1 << 31:
        return False
    return int(counts.sum(axis=1).max()) < 1 << 31


def _segment_starts(lengths: Any, lanes: int, n_words: int) -> np.ndarray | None:
    """Start of every lane's segment and the end, or None if the lengths do not
    tile the words exactly (the reference then reports it)."""
    if not (isinstance(lengths, np.ndarray) and lengths.shape == (lanes,)):
        return None
    if lengths.dtype.kind not in "iu" or (lengths.size and int(lengths.min()) < 0):
        return None
    starts = np.zeros(lanes + 1, dtype=np.int64)
    np.cumsum(lengths.astype(np.int64), out=starts[1:])
    return starts if starts[-1] == n_words else None


def _valid_bounds(bounds: Any, lanes: int, rows: int) -> bool:
    """Row bounds of lanes: int64, lanes + 1 of them, from 0 to rows, never falling."""
    return (
        isinstance(bounds, np.ndarray)
        and bounds.dtype == np.int64
        and bounds.shape == (lanes + 1,)
        and bounds[0] == 0
        and bounds[-1] == rows
        and bool((np.diff(bounds) >= 0).all())
    )


class RansKernels:
    """The rANS coder's public operations over one backend module of kernels."""

    def __init__(self, impl: ModuleType) -> None:
        self.impl = impl
        #: The backend's short name: "c".
        self.backend = impl.__name__.rsplit("_", 1)[-1]

    def __repr__(self) -> str:
        return f"RansKernels({self.impl.__name__})"

    def init_buckets(
        self, packed: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool] | None:
        """Class counts, first sorted positions, bucket of every position and values
        per bucket of rows of sorted (key << 32 | position) words (see the C kernel);
        None where this backend has no such kernel."""
        kernel = getattr(self.impl, "init_buckets_kernel", None)
        if kernel is None or packed.ndim != 2 or packed.dtype != np.int64 or k < 1:
            return None
        return kernel(np.ascontiguousarray(packed), int(k))

    def place_refined(
        self, seq: np.ndarray, sym: np.ndarray, values: np.ndarray, k: int
    ) -> np.ndarray | None:
        """``rebuild(unrefine(seq, sym), values)`` of :mod:`permcodec.coding.buckets` in
        one pass (values of 2, 4 or 8 bytes); None where the kernel does not apply."""
        kernel = getattr(self.impl, "place_refined_kernel", None)
        width = values.dtype.itemsize
        s, t = _index_array(seq), _index_array(sym)
        if kernel is None or width not in (2, 4, 8) or s is None or t is None:
            return None
        if s.ndim != 2 or s.shape != t.shape or values.ndim != 2 or values.shape[0] != s.shape[0]:
            return None
        words = np.ascontiguousarray(values).view(f"u{width}")
        out = kernel(s, t, words, int(k))
        return None if out is None else out.view(values.dtype)

    def encode(
        self, cls: np.ndarray, counts: np.ndarray, lanes: int, totals: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:func:`permcodec.coding.rans.encode` by the kernel; None outside its domain."""
        c, cnt, n_lanes = _index_array(cls), _int64_array(counts), _lanes(lanes)
        if c is None or cnt is None or n_lanes is None or c.ndim != 2 or cnt.ndim != 2:
            return None
        rows, m = c.shape
        if rows == 0 or m == 0 or cnt.shape[0] != rows or not _in_range(c, cnt.shape[1]):
            return None
        if totals is None:
            tot, has_totals = np.zeros((1, 1), dtype=np.int64), False
        else:
            tot, has_totals = _int64_array(totals), True
            if tot is None or tot.shape != (rows, m):
                return None
        x, words, status = self.impl.encode_kernel(
            c, cnt, tot, has_totals, n_lanes, _word_capacity(rows, m)
        )
        if status != OK:
            return None
        return x.astype(np.uint64), words

    def encode_ctx(
        self, sym: np.ndarray, ctx: np.ndarray, counts: np.ndarray, weights: np.ndarray, lanes: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:func:`permcodec.coding.rans.encode_ctx` by the kernel; None outside its domain."""
        t, cx = _index_array(sym), _index_array(ctx)
        cnt, w, n_lanes = _int64_array(counts), _int64_array(weights), _lanes(lanes)
        if t is None or cx is None or cnt is None or w is None or n_lanes is None:
            return None
        if t.ndim != 2 or cnt.ndim != 2 or cx.shape != t.shape or w.ndim != 1:
            return None
        rows, m = t.shape
        k = cnt.shape[1]
        if rows == 0 or m == 0 or cnt.shape[0] != rows or w.shape[0] != 2 * k - 1:
            return None
        if not (_in_range(t, k) and _in_range(cx, k)):
            return None
        if int(w.min()) < 1 or m * int(w.max()) > 1 << 31:
            return None  # outside encode_ctx's documented range: the reference judges
        x, words, status = self.impl.encode_ctx_kernel(
            t, cx, cnt, w, n_lanes, _word_capacity(rows, m)
        )
        if status != OK:
            return None
        return x.astype(np.uint64), words

    def decode_window(
        self,
        states: np.ndarray,
        window: np.ndarray,
        counts: np.ndarray,
        m: int,
        name: str = "?",
        totals: np.ndarray | None = None,
        start: bool = True,
        final: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """``decode_run``'s reference (:mod:`permcodec.coding.rans`) by the kernels:
        (classes, lane states, words used), or None outside their domain. States out of range always go
        to the reference, which rejects them at the ``start`` of a stream."""
        x, words, cnt = _states(states), _words(window), _int64_array(counts)
        if x is None or words is None or cnt is None or cnt.ndim != 2:
            return None
        if not isinstance(m, (int, np.integer)):
            return None
        m = int(m)
        rows, n = cnt.shape
        if rows == 0 or m <= 0 or n == 0:
            return None
        if totals is None and _consistent(cnt, m):
            distinct = _distinct_rows(cnt, m)
            code, status, used = self.impl.decode_mixed_kernel(x, words, cnt, distinct, m, final)
            raise_for(status, name)
            return self.impl.lehmer_to_classes(code, distinct), x.astype(np.uint64), used
        if not _bounded(cnt):
            return None
        top = 1 << (max(1, n.bit_length()) - 1)
        if totals is None:
            tot, has_totals = np.zeros((1, 1), dtype=np.int64), False
        else:
            tot, has_totals = _int64_array(totals), True
            if tot is None or tot.shape != (rows, m) or int(tot.min()) < 1:
                return None  # a zero total divides by zero in the reference
        out, status, used = self.impl.decode_kernel(x, words, cnt, tot, has_totals, m, top, final)
        raise_for(status, name)
        return out, x.astype(np.uint64), used

    def decode_ctx_window(
        self,
        states: np.ndarray,
        window: np.ndarray,
        ctx: np.ndarray,
        counts: np.ndarray,
        weights: np.ndarray,
        name: str = "?",
        start: bool = True,
        final: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """``decode_ctx_run``'s reference with the compiled kernel: (symbols,
        lane states, words used), or None outside its domain (see :func:`decode_window`)."""
        x, words = _states(states), _words(window)
        cx, cnt, w = _index_array(ctx), _int64_array(counts), _int64_array(weights)
        if x is None or words is None or cx is None or cnt is None or w is None:
            return None
        if cx.ndim != 2 or cnt.ndim != 2 or w.ndim != 1:
            return None
        rows, k = cnt.shape
        if rows == 0 or cx.shape[1] == 0 or k == 0 or cx.shape[0] != rows:
            return None
        if w.shape[0] != 2 * k - 1 or not _in_range(cx, k):
            return None
        if int(w.min()) < 1 or not _bounded(cnt):
            return None  # the kernel's search needs non-decreasing cumulative weights
        if int(cnt.sum(axis=1).max()) * int(w.max()) > 1 << 31:
            return None  # a weighted total must fit the 31-bit scale, as encode_ctx requires
        out, status, used = self.impl.decode_ctx_kernel(x, words, cx, cnt, w, final)
        raise_for(status, name)
        return out, x.astype(np.uint64), used

    def encode_rows(
        self, cls: np.ndarray, counts: np.ndarray, lanes: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """:func:`permcodec.coding.rans.encode_rows` by the kernels; None outside their domain."""
        c, cnt, n_lanes = _index_array(cls), _int64_array(counts), _lanes(lanes)
        if c is None or cnt is None or n_lanes is None or c.ndim != 2 or cnt.ndim != 2:
            return None
        rows, m = c.shape
        if rows == 0 or m == 0 or cnt.shape[0] != rows or n_lanes > rows:
            return None
        if not _in_range(c, cnt.shape[1]) or not _consistent(cnt, m):
            return None
        bounds = lane_bounds(rows, n_lanes)
        x, seg, buf, ok = self.impl.encode_rows_kernel(c, cnt, _distinct_rows(cnt, m), bounds)
        if not ok:
            return None
        ends = bounds[1:] * m
        words = np.concatenate([buf[a:b] for a, b in zip(seg, ends, strict=True)])
        return x.astype(np.uint64), (ends - seg).astype(np.uint32), words

    def decode_rows_window(
        self,
        states: np.ndarray,
        lengths: np.ndarray,
        window: np.ndarray,
        counts: np.ndarray,
        m: int,
        name: str = "?",
        bounds: np.ndarray | None = None,
        start: Any = True,
        final: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``decode_rows_run``'s reference with the compiled kernels: (classes,
        lane states, words each lane used), or None outside their domain. States out of
        range always go to the reference, which rejects them at the ``start`` of a lane."""
        x, w, cnt = _states(states), _words(window), _int64_array(counts)
        if x is None or w is None or cnt is None or cnt.ndim != 2 or not isinstance(m, int):
            return None
        rows, lanes = cnt.shape[0], x.shape[0]
        starts = _segment_starts(lengths, lanes, w.shape[0])
        if rows == 0 or m <= 0 or lanes > rows or starts is None:
            return None
        distinct = _distinct_rows(cnt, m)
        if not _consistent(cnt, m, distinct):
            return None
        if bounds is None:
            bounds = lane_bounds(rows, lanes)
        elif not _valid_bounds(bounds, lanes, rows):
            return None
        out, status, used = self.impl.decode_rows_kernel(
            x, starts, w, cnt, distinct, bounds, m, bool(final)
        )
        raise_for(ENDS_EARLY if (status == ENDS_EARLY).any() else int(status.max()), name)
        return out, x.view(np.uint64), used  # x: this call's copy, states >= 0
