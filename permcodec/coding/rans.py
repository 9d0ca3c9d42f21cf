"""Interleaved rANS coding of multiset arrangements, vectorized across rows.

Each row is coded as its sequence of class indices under the adaptive multinomial
model P(c) = remaining(c) / remaining(all), which costs exactly the bound B. The
model's interval is mapped onto a 2**31 total (the loss is below 1e-3 bit per symbol
for rows up to 2**21 values). Rows are spread over ``lanes`` independent 64-bit rANS
states that advance in lockstep and share one stream of 32-bit words, so every step is
one vector operation over the lanes. Fenwick trees hold the remaining counts.

Three coders, each an ``encode*`` and its inverse ``decode*``: the multiset model over
groups of lanes (``perm-rans``, the refinement stream of ``bucket-rans``), the context
model (``bucket-rans``'s bucket layer) and the multiset model with one word segment per
lane (``row-rans``). The ``*_run`` forms decode a stream a run of rows at a time, so a
decoder needs the model of only those rows.

The numpy code here (the ``_*_ref`` functions) is the reference. Every public coder runs
the bit-identical compiled kernels (C) of ``permcodec.kernels.load("rans")``
instead where it gives them, and the reference otherwise (also for the
rare inputs the kernels leave to it): set ``PERMCODEC_PURE_NUMPY=1`` to run the
reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import kernels
from ..errors import IntegrityError
from ..kernels.contract import (
    ENDS_EARLY,
    INCONSISTENT,
    PROB_BITS,
    PROB_ONE,
    STATE_LOW,
    WORD_MASK,
    lane_bounds,
    stream_error,
)

__all__ = [
    "PROB_BITS",
    "PROB_ONE",
    "STATE_LOW",
    "check_states",
    "choose_lanes",
    "choose_segment_lanes",
    "decode",
    "decode_ctx",
    "decode_ctx_run",
    "decode_rows",
    "decode_rows_run",
    "decode_run",
    "encode",
    "encode_ctx",
    "encode_rows",
    "lane_bounds",
]
#: Overhead budget for the lane states, as a fraction of the bound.
LANE_BUDGET = 0.004
#: Most values in a group of lanes (lanes x row length) the encoder makes: a decoder
#: holds a whole group's rows at once, so this bounds its working memory.
GROUP_VALUES = 1 << 15


def choose_lanes(rows: int, bound: float, m: int) -> int:
    """Number of lanes of rows of ``m`` values: as many as keep the 64-bit state
    flushes under 0.4% of B, in groups of at most :data:`GROUP_VALUES` values."""
    most = max(1, GROUP_VALUES // max(m, 1))
    return int(max(1, min(rows, most, bound * LANE_BUDGET // 64)))


def _fenwick(counts: np.ndarray) -> np.ndarray:
    """Fenwick trees (one per row, 1-based, shape (R, N+1)) over class counts."""
    rows, n = counts.shape
    prefix = np.zeros((rows, n + 1), dtype=np.int64)
    np.cumsum(counts, axis=1, out=prefix[:, 1:])
    idx = np.arange(1, n + 1, dtype=np.int64)
    tree = np.zeros_like(prefix)
    tree[:, 1:] = prefix[:, 1:] - prefix[:, idx - (idx & -idx)]
    return tree


def _fenwick_sub1(
    flat_tree: np.ndarray,
    base: np.ndarray,
    cls: np.ndarray,
    n: int,
    active: np.ndarray | None = None,
) -> None:
    """Remove one count of class ``cls`` in every tree (rows start at ``base`` in flat)."""
    i = cls + 1
    dec = np.ones_like(i) if active is None else active.astype(np.int64)
    for _ in range(max(1, n.bit_length())):
        ok = i <= n
        flat_tree[base + np.where(ok, i, 0)] -= np.where(ok, dec, 0)
        i = i + (i & -i)


def _step_totals(totals: np.ndarray | None, rows: int, m: int, j: int) -> np.ndarray | int:
    return m - j if totals is None else totals[:, j]


def _intervals(
    cls: np.ndarray, counts: np.ndarray, totals: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Quantized (start, freq) of every symbol of every row, in coding order."""
    rows, m = cls.shape
    n = counts.shape[1]
    tree = _fenwick(counts)
    flat = tree.reshape(-1)
    cnt = counts.copy().reshape(-1)
    base = np.arange(rows, dtype=np.int64) * (n + 1)
    cbase = np.arange(rows, dtype=np.int64) * n
    start = np.empty((rows, m), dtype=np.int64)
    freq = np.empty((rows, m), dtype=np.int64)
    levels = max(1, n.bit_length())
    for j in range(m):
        v = cls[:, j]
        i = v.copy()
        below = np.zeros(rows, dtype=np.int64)
        for _ in range(levels):
            ok = i > 0
            below += np.where(ok, flat[base + i], 0)
            i = i - (i & -i)
        f = cnt[cbase + v]
        total = _step_totals(totals, rows, m, j)
        lo = (below << PROB_BITS) // total
        start[:, j] = lo
        freq[:, j] = ((below + f) << PROB_BITS) // total - lo
        cnt[cbase + v] -= 1
        _fenwick_sub1(flat, base, v, n)
    return start, freq


def _ctx_weights(rem: np.ndarray, ctx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-row symbol weights rem(c) * W[c - ctx + K - 1] of the context model."""
    k = rem.shape[1]
    return rem * weights[np.arange(k, dtype=np.int64)[None, :] - ctx[:, None] + (k - 1)]


def _ctx_intervals(
    sym: np.ndarray, ctx: np.ndarray, counts: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(start, freq) of every symbol under the context model (see :func:`encode_ctx`)."""
    rows, m = sym.shape
    rem = counts.copy()
    r_idx = np.arange(rows, dtype=np.int64)
    start = np.empty((rows, m), dtype=np.int64)
    freq = np.empty((rows, m), dtype=np.int64)
    for j in range(m):
        w = _ctx_weights(rem, ctx[:, j], weights)
        cum = np.cumsum(w, axis=1)
        total = cum[:, -1]
        t = sym[:, j]
        hi_c = cum[r_idx, t]
        lo_c = hi_c - w[r_idx, t]
        lo = (lo_c << PROB_BITS) // total
        start[:, j] = lo
        freq[:, j] = (hi_c << PROB_BITS) // total - lo
        rem[r_idx, t] -= 1
    return start, freq


def _grouped(a: np.ndarray, lanes: int, fill: int) -> np.ndarray:
    """(R, m) -> (G, lanes, m), padding missing rows with ``fill``."""
    rows, m = a.shape
    groups = -(-rows // lanes)
    out = np.full((groups * lanes, m), fill, dtype=a.dtype)
    out[:rows] = a
    return out.reshape(groups, lanes, m)


def _encode_intervals(
    start: np.ndarray, freq: np.ndarray, lanes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rANS state machine over precomputed intervals (R, m), lanes in lockstep."""
    start_g = _grouped(start, lanes, 0)
    freq_g = _grouped(freq, lanes, PROB_ONE)  # padded rows: identity steps
    groups, _, m = start_g.shape
    x = np.full(lanes, STATE_LOW, dtype=np.int64)
    emitted: list[np.ndarray] = []
    for g in range(groups - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            st, fr = start_g[g, :, j], freq_g[g, :, j]
            out = (x >> 32) >= fr
            if out.any():
                emitted.append((x[out] & WORD_MASK)[::-1])
                x = np.where(out, x >> 32, x)
            x = ((x // fr) << PROB_BITS) + (x % fr) + st
    stream = np.concatenate(emitted)[::-1] if emitted else np.zeros(0, dtype=np.int64)
    return x.astype(np.uint64), stream.astype(np.uint32)


def _fast_or_reference(kernel: str, reference: Callable[..., Any], *args: Any) -> Any:
    """The compiled ``<kernel>(*args)``, or ``reference(*args)`` where the kernels are not
    loaded or leave the input to the reference (they return None then)."""
    fast = kernels.load("rans")
    out = None if fast is None else getattr(fast, kernel)(*args)
    return reference(*args) if out is None else out


def check_states(states: np.ndarray, name: str) -> None:
    """Every lane state must lie in [2**31, 2**63) (FORMAT 4.3.4)."""
    if ((states < STATE_LOW) | (states >= np.uint64(1 << 63))).any():
        raise IntegrityError(f"tensor {name!r}: coder state out of range", name)


def encode(
    cls: np.ndarray, counts: np.ndarray, lanes: int, totals: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Code class sequences ``cls`` (R, m) given each row's class ``counts`` (R, N).

    ``totals`` (R, m), when given, replaces the remaining total m - j of step j: the
    count still to come in the current segment, for rows coded segment by segment
    (classes of earlier segments are then used up, so cumulative counts need no
    offset). Returns (final lane states as uint64, stream of uint32 words).
    """
    return _fast_or_reference("encode", _encode_ref, cls, counts, lanes, totals)


def encode_ctx(
    sym: np.ndarray, ctx: np.ndarray, counts: np.ndarray, weights: np.ndarray, lanes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Code symbols ``sym`` (R, m) over K classes with fixed per-row ``counts`` (R, K).

    Step j of a row codes class c with probability proportional to
    ``remaining(c) * weights[c - ctx[j] + K - 1]``: a multiset model tilted towards
    classes near the context (the initial bucket of the position). ``weights`` holds
    2K - 1 integers in [1, 2**16); every row's ``m * max(weights)`` must be <= 2**31.
    """
    return _fast_or_reference("encode_ctx", _encode_ctx_ref, sym, ctx, counts, weights, lanes)


def decode(
    states: np.ndarray,
    stream: np.ndarray,
    counts: np.ndarray,
    m: int,
    name: str = "?",
    totals: np.ndarray | None = None,
) -> np.ndarray:
    """Inverse of :func:`encode`: the class sequences (R, m)."""
    return decode_run(states, stream, counts, m, name, totals)[0]


def decode_ctx(
    states: np.ndarray,
    stream: np.ndarray,
    ctx: np.ndarray,
    counts: np.ndarray,
    weights: np.ndarray,
    name: str = "?",
) -> np.ndarray:
    """Inverse of :func:`encode_ctx`: the symbols (R, m)."""
    return decode_ctx_run(states, stream, ctx, counts, weights, name)[0]


def _window(stream: np.ndarray, rows: int, lanes: int, m: int, pos: int, final: bool) -> np.ndarray:
    """The words a run of ``rows`` rows starting at word ``pos`` may read: the rest of
    the stream for the last run, else at most one word per lane and step (so a run
    converts or copies only its own words)."""
    if not (isinstance(pos, (int, np.integer)) and 0 <= pos <= stream.shape[0]):
        raise ValueError(f"word position {pos!r} outside the stream of {stream.shape[0]}")
    if final:
        return stream[pos:]
    if rows % lanes:
        raise ValueError(f"a run other than the last must be whole groups of {lanes} rows")
    return stream[pos : pos + rows * m]


def decode_run(
    states: np.ndarray,
    stream: np.ndarray,
    counts: np.ndarray,
    m: int,
    name: str = "?",
    totals: np.ndarray | None = None,
    *,
    pos: int = 0,
    final: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`decode` resumable a run of whole groups at a time (FORMAT 4.3.2):
    ``counts`` (and ``totals``) are those of the run's rows, ``states`` and ``pos``
    where the previous run left the stream. Returns (classes, lane states, next word
    position); only the last run (``final``) checks that the stream ends there."""
    window = _window(stream, counts.shape[0], states.shape[0], m, pos, final)
    # the states are checked where no word has been read: a state that leaves
    # [2**31, 2**63) reads one at once, so a run resumed at pos 0 holds valid states
    args = (states, window, counts, m, name, totals, pos == 0, final)
    sym, states, used = _fast_or_reference("decode_window", _decode_window_ref, *args)
    return sym, states, pos + used


def decode_ctx_run(
    states: np.ndarray,
    stream: np.ndarray,
    ctx: np.ndarray,
    counts: np.ndarray,
    weights: np.ndarray,
    name: str = "?",
    *,
    pos: int = 0,
    final: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`decode_ctx` resumable a run of whole groups at a time, as
    :func:`decode_run`: (symbols, lane states, next word position)."""
    window = _window(stream, counts.shape[0], states.shape[0], ctx.shape[1], pos, final)
    args = (states, window, ctx, counts, weights, name, pos == 0, final)
    sym, states, used = _fast_or_reference("decode_ctx_window", _decode_ctx_window_ref, *args)
    return sym, states, pos + used


def _encode_ref(
    cls: np.ndarray, counts: np.ndarray, lanes: int, totals: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The reference behind :func:`encode`."""
    start, freq = _intervals(cls, counts, totals)
    return _encode_intervals(start, freq, lanes)


def _encode_ctx_ref(
    sym: np.ndarray, ctx: np.ndarray, counts: np.ndarray, weights: np.ndarray, lanes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The reference behind :func:`encode_ctx`."""
    start, freq = _ctx_intervals(sym, ctx, counts, weights)
    return _encode_intervals(start, freq, lanes)


class _MultisetModel:
    """Decoder side of the adaptive multinomial model, one group of lanes at a time."""

    def __init__(self, counts: np.ndarray, m: int, lanes: int, totals: np.ndarray | None):
        rows, n = counts.shape
        groups = -(-rows // lanes)
        self.padded = np.zeros((groups * lanes, n), dtype=np.int64)
        self.padded[:rows] = counts
        self.totals = None
        if totals is not None:
            self.totals = np.ones((groups * lanes, m), dtype=np.int64)
            self.totals[:rows] = totals
        self.n, self.m, self.lanes = n, m, lanes
        lane_ids = np.arange(lanes, dtype=np.int64)
        self.base = lane_ids * (n + 1)
        self.cbase = lane_ids * n
        self.top = 1 << (max(1, n.bit_length()) - 1)

    def begin(self, g: int) -> np.ndarray:
        sl = slice(g * self.lanes, (g + 1) * self.lanes)
        gcounts = self.padded[sl]
        self.flat = _fenwick(gcounts).reshape(-1)
        self.cnt = gcounts.copy().reshape(-1)
        self.gtotals = None if self.totals is None else self.totals[sl]
        self.active = gcounts.sum(axis=1) > 0
        return self.active

    def step(self, j: int, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, flat = self.n, self.flat
        total = self.m - j if self.gtotals is None else self.gtotals[:, j]
        c = ((s + 1) * total - 1) >> PROB_BITS
        at = np.zeros(self.lanes, dtype=np.int64)
        rem = c
        step = self.top
        while step:
            nxt = at + step
            tv = flat[self.base + np.minimum(nxt, n)]
            ok = (nxt <= n) & (tv <= rem)
            at = np.where(ok, nxt, at)
            rem = np.where(ok, rem - tv, rem)
            step >>= 1
        at = np.minimum(at, n - 1)
        below = c - rem
        f = self.cnt[self.cbase + at]
        lo = (below << PROB_BITS) // total
        fr = ((below + f) << PROB_BITS) // total - lo
        self.cnt[self.cbase + at] -= self.active
        _fenwick_sub1(flat, self.base, at, n, self.active)
        return at, lo, fr


class _ContextModel:
    """Decoder side of the context model of :func:`encode_ctx`."""

    def __init__(self, ctx: np.ndarray, counts: np.ndarray, weights: np.ndarray, lanes: int):
        rows, k = counts.shape
        groups = -(-rows // lanes)
        self.padded = np.zeros((groups * lanes, k), dtype=np.int64)
        self.padded[:rows] = counts
        self.ctx = np.zeros((groups * lanes, ctx.shape[1]), dtype=np.int64)
        self.ctx[:rows] = ctx
        self.weights, self.lanes = weights, lanes
        self.r_idx = np.arange(lanes, dtype=np.int64)

    def begin(self, g: int) -> np.ndarray:
        sl = slice(g * self.lanes, (g + 1) * self.lanes)
        self.rem = self.padded[sl].copy()
        self.gctx = self.ctx[sl]
        self.active = self.rem.sum(axis=1) > 0
        return self.active

    def step(self, j: int, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = _ctx_weights(self.rem, self.gctx[:, j], self.weights)
        cum = np.cumsum(w, axis=1)
        total = np.maximum(cum[:, -1], 1)
        c = ((s + 1) * total - 1) >> PROB_BITS
        t = np.minimum((cum <= c[:, None]).sum(axis=1), w.shape[1] - 1)
        hi_c = cum[self.r_idx, t]
        lo_c = hi_c - w[self.r_idx, t]
        lo = (lo_c << PROB_BITS) // total
        fr = (hi_c << PROB_BITS) // total - lo
        self.rem[self.r_idx, t] -= self.active
        return t, lo, fr


def _decode_step(
    model: _MultisetModel | _ContextModel, active: np.ndarray, x: np.ndarray, j: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Step j of every lane (idle lanes keep their state): (symbols, states before
    renormalization)."""
    s = x & (PROB_ONE - 1)
    sym, lo, fr = model.step(j, s)
    lo = np.where(active, lo, 0)
    fr = np.where(active, fr, PROB_ONE)
    if (fr <= 0).any():
        raise stream_error(INCONSISTENT, name)
    return sym, fr * (x >> PROB_BITS) + s - lo


def _decode_with(
    model: _MultisetModel | _ContextModel,
    states: np.ndarray,
    window: np.ndarray,
    rows: int,
    m: int,
    name: str,
    start: bool = True,
    final: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The rANS decoder loop shared by both models, over the groups of ``rows`` rows
    reading ``window`` (the stream from where the previous run stopped): (symbols
    (R, m), lane states, words used). ``start``: the states are the stream's stored
    ones (checked); ``final``: the stream must end with these groups."""
    lanes = states.shape[0]
    if rows == 0 or m == 0:
        if final and (window.shape[0] or (states != STATE_LOW).any()):
            raise IntegrityError(f"tensor {name!r}: an empty tensor has coded data", name)
        return np.zeros((rows, m), dtype=np.int64), states.astype(np.uint64), 0
    if start:
        check_states(states, name)
    words = window.astype(np.int64)
    x = states.astype(np.int64)
    groups = -(-rows // lanes)
    out = np.zeros((groups * lanes, m), dtype=np.int64)
    pos = 0
    for g in range(groups):
        active = model.begin(g)
        for j in range(m):
            sym, x = _decode_step(model, active, x, j, name)
            need = x < STATE_LOW
            k = int(need.sum())
            if k:
                if pos + k > words.shape[0]:
                    raise stream_error(ENDS_EARLY, name)
                x[need] = (x[need] << 32) | words[pos : pos + k]
                pos += k
            out[g * lanes : (g + 1) * lanes, j] = sym
    if final and (pos != words.shape[0] or (x != STATE_LOW).any()):
        raise stream_error(INCONSISTENT, name)
    return out[:rows], x.astype(np.uint64), pos


def _decode_window_ref(
    states: np.ndarray,
    window: np.ndarray,
    counts: np.ndarray,
    m: int,
    name: str = "?",
    totals: np.ndarray | None = None,
    start: bool = True,
    final: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The reference behind :func:`decode_run`: (classes, lane states, words used)."""
    model = _MultisetModel(counts, m, states.shape[0], totals)
    return _decode_with(model, states, window, counts.shape[0], m, name, start, final)


def _decode_ctx_window_ref(
    states: np.ndarray,
    window: np.ndarray,
    ctx: np.ndarray,
    counts: np.ndarray,
    weights: np.ndarray,
    name: str = "?",
    start: bool = True,
    final: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The reference behind :func:`decode_ctx_run`: (symbols, lane states, words used)."""
    model = _ContextModel(ctx, counts, weights, states.shape[0])
    rows, m = counts.shape[0], ctx.shape[1]
    return _decode_with(model, states, window, rows, m, name, start, final)


# ------------------------------------------------ row-rans: one segment per lane

#: Per-lane cost of a ``row-rans`` stream in bits: final state and segment length.
SEGMENT_LANE_BITS = 96


def choose_segment_lanes(rows: int, bound: float) -> int:
    """Lanes of a ``row-rans`` stream: as many as keep their states and segment
    lengths under 0.4% of B (more lanes decode in parallel), at most one per row."""
    return int(max(1, min(rows, bound * LANE_BUDGET // SEGMENT_LANE_BITS)))


def _lane_schedule(bounds: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Row each lane codes in round ``t`` (its t-th row) and whether it has one."""
    row = bounds[:-1] + t
    live = row < bounds[1:]
    return np.where(live, row, 0), live


def _encode_rows_ref(
    cls: np.ndarray, counts: np.ndarray, lanes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference behind :func:`encode_rows`."""
    return encode_segments(*_intervals(cls, counts), lanes)


def encode_segments(
    start: np.ndarray, freq: np.ndarray, lanes: int, prob_bits: int = PROB_BITS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference encoder of one word segment per lane (``row-rans``, ``grid-rans``):
    every symbol's interval (start, freq), (R, m), on a total of 2**prob_bits; lane l
    codes rows [b[l], b[l+1]), all lanes stepping together, last symbol first. Returns
    (states, segment lengths, words of lane 0, lane 1, ... each in decoding order)."""
    rows, m = start.shape
    bounds = lane_bounds(rows, lanes)
    x = np.full(lanes, STATE_LOW, dtype=np.int64)
    emit = 63 - prob_bits  # a state with x >> emit >= freq emits a word first
    emitted_lane: list[np.ndarray] = []
    emitted_word: list[np.ndarray] = []
    rounds = int((bounds[1:] - bounds[:-1]).max()) if rows else 0
    for t in range(rounds - 1, -1, -1):
        row, live = _lane_schedule(bounds, t)
        for j in range(m - 1, -1, -1):
            st = np.where(live, start[row, j], 0)
            fr = np.where(live, freq[row, j], 1 << prob_bits)  # idle lanes: identity steps
            out = (x >> emit) >= fr
            if out.any():
                emitted_lane.append(np.nonzero(out)[0])
                emitted_word.append(x[out] & WORD_MASK)
                x = np.where(out, x >> 32, x)
            x = ((x // fr) << prob_bits) + (x % fr) + st
    if emitted_lane:
        lane_of = np.concatenate(emitted_lane)[::-1]  # decoding order
        words = np.concatenate(emitted_word)[::-1]
        order = np.argsort(lane_of, kind="stable")
        lengths = np.bincount(lane_of, minlength=lanes)
        words = words[order]
    else:
        lengths, words = np.zeros(lanes, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return x.astype(np.uint64), lengths.astype(np.uint32), words.astype(np.uint32)


def _decode_rows_window_ref(
    states: np.ndarray,
    lengths: np.ndarray,
    window: np.ndarray,
    counts: np.ndarray,
    m: int,
    name: str = "?",
    bounds: np.ndarray | None = None,
    start: np.ndarray | bool = True,
    final: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference behind :func:`decode_rows_run`: lane l reads its window (the
    next ``lengths[l]`` words of ``window``). Returns (classes, lane states, words each
    lane used). ``start``: which lanes hold their stored states (checked); ``final``:
    each lane must end with these rows."""
    rows = counts.shape[0]
    lanes = states.shape[0]
    check_states(states[np.broadcast_to(start, (lanes,))], name)
    bounds = lane_bounds(rows, lanes) if bounds is None else bounds
    ends = np.cumsum(lengths.astype(np.int64))
    first = ends - lengths.astype(np.int64)
    ptr = first.copy()
    stream = window.astype(np.int64)
    x = states.astype(np.int64)
    out = np.zeros((rows, m), dtype=np.int64)
    rounds = int((bounds[1:] - bounds[:-1]).max()) if rows else 0
    for t in range(rounds):
        row, live = _lane_schedule(bounds, t)
        model = _MultisetModel(np.where(live[:, None], counts[row], 0), m, lanes, None)
        active = model.begin(0)
        for j in range(m):
            sym, x = _decode_step(model, active, x, j, name)
            need = x < STATE_LOW
            if need.any():
                if (ptr[need] >= ends[need]).any():
                    raise stream_error(ENDS_EARLY, name)
                x[need] = (x[need] << 32) | stream[ptr[need]]
                ptr[need] += 1
            out[row[live], j] = sym[live]
    if final and ((ptr != ends).any() or (x != STATE_LOW).any()):
        raise stream_error(INCONSISTENT, name)
    return out, x.astype(np.uint64), ptr - first


def encode_rows(
    cls: np.ndarray, counts: np.ndarray, lanes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Code rows with the multiset model, lane l coding rows [b[l], b[l+1]) in order
    (:func:`lane_bounds`) into its own word segment. Returns (states, segment lengths,
    words of lane 0, lane 1, ... each in decoding order)."""
    return _fast_or_reference("encode_rows", _encode_rows_ref, cls, counts, lanes)


def decode_rows(
    states: np.ndarray,
    lengths: np.ndarray,
    words: np.ndarray,
    counts: np.ndarray,
    m: int,
    name: str = "?",
    bounds: np.ndarray | None = None,
) -> np.ndarray:
    """Inverse of :func:`encode_rows` for the rows whose ``counts`` (R, N) are given:
    the class sequences (R, m). ``bounds`` (lanes + 1, from 0 to R) say which rows each
    lane codes (default :func:`lane_bounds`), so a decoder may take any run of whole
    lanes of a stream. All lanes advance in lockstep, each reading its own segment."""
    return decode_rows_run(states, lengths, words, counts, m, name, bounds)[0]


def _segment_windows(
    lengths: np.ndarray, words: np.ndarray, used: np.ndarray, steps: np.ndarray, final: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(window lengths, words) of the lanes from where they stopped: the rest of each
    segment in a final run, else at most one word per step of the run's rows (so a run
    converts or copies only its own words)."""
    size = lengths.astype(np.int64)
    if not (used.shape == size.shape and ((used >= 0) & (used <= size)).all()):
        raise ValueError(f"word positions {used!r} outside the segments of {size!r} words")
    take = size - used if final else np.minimum(size - used, steps)
    first = np.cumsum(size) - size + used
    return take, np.concatenate([words[a : a + t] for a, t in zip(first, take, strict=True)])


def decode_rows_run(
    states: np.ndarray,
    lengths: np.ndarray,
    words: np.ndarray,
    counts: np.ndarray,
    m: int,
    name: str = "?",
    bounds: np.ndarray | None = None,
    *,
    used: np.ndarray | None = None,
    final: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`decode_rows` resumable inside lanes: ``counts`` and ``bounds`` are those
    of the run's rows (a lane's next rows), ``states`` and ``used`` (words of each
    segment already read; None: none) where the previous run left each lane.
    Returns (classes, lane states, words of each segment used so far); only the
    lanes' last run (``final``) checks that each ends with its segment at 2**31."""
    if used is None and final:  # whole lanes: their segments as they are
        args = (states, lengths, words, counts, m, name, bounds, True, True)
    else:
        lanes = states.shape[0]
        bounds = lane_bounds(counts.shape[0], lanes) if bounds is None else bounds
        used = np.zeros(lanes, np.int64) if used is None else np.asarray(used, np.int64)
        sizes, window = _segment_windows(lengths, words, used, np.diff(bounds) * m, final)
        # as in decode_run: a lane that has read no word yet holds valid states
        args = (states, sizes, window, counts, m, name, bounds, used == 0, final)
    cls, states, took = _fast_or_reference("decode_rows_window", _decode_rows_window_ref, *args)
    return cls, states, took if used is None else used + took


#: The numpy reference behind each public coder, by the name of the kernel that
#: shadows it in :class:`permcodec.kernels.rans_host.RansKernels`: the kernels' oracle.
REFERENCE: dict[str, Callable[..., Any]] = {
    "encode": _encode_ref,
    "encode_ctx": _encode_ctx_ref,
    "encode_rows": _encode_rows_ref,
    "decode_window": _decode_window_ref,
    "decode_ctx_window": _decode_ctx_window_ref,
    "decode_rows_window": _decode_rows_window_ref,
}
