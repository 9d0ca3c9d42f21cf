"""Numba kernels for the rANS coder of :mod:`permcodec.coding.rans`, bit-identical to it.

The numpy coder in :mod:`permcodec.coding.rans` is the reference; these kernels compute the
same states, words and symbols with scalar loops (lanes still advance in lockstep,
since the lane/group interleaving of the word stream is part of the format). All
arithmetic is exact int64, as in the reference.

The encoders walk each group backwards (steps m-1 .. 0) and rebuild the remaining
counts as they go: the counts left at step j are those of the symbols at j .. m-1.
That equals the reference's ``counts - used`` exactly when every row's counts are
those of its symbols, which the kernels check at the end of each group; this keeps the
encoders free of (R, m) interval arrays.

The kernels trust their inputs; :class:`permcodec.kernels.rans_host.RansKernels` checks
them first. :mod:`permcodec.kernels.rans_c` is the Cython twin of this module, with the
same kernel names, arguments and results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from . import contract
from .contract import (
    ENDS_EARLY,
    FALLBACK,
    INCONSISTENT,
    OK,
    PROB_BITS,
    PROB_ONE,
    STATE_LOW,
    WORD_MASK,
)

_LOW_MASK = PROB_ONE - 1


def _jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit(cache=True, nogil=True)`` (threads may decode side by side), or
    without the on-disk cache where numba finds no writable cache directory (it would
    refuse to compile at all otherwise)."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, nogil=True)(fn)


# ---------------------------------------------------------------- kernels


@_jit
def _push_word(buf: np.ndarray, nw: int, word: int) -> np.ndarray:
    """Store ``word`` at ``buf[nw]``, doubling the buffer when it is full."""
    if nw == buf.shape[0]:
        bigger = np.empty(2 * buf.shape[0], dtype=np.uint32)
        bigger[:nw] = buf[:nw]
        buf = bigger
    buf[nw] = np.uint32(word)
    return buf


@_jit
def _emit(x: int, lo: int, fr: int, buf: np.ndarray, nw: int) -> tuple[int, np.ndarray, int]:
    """One encoder step of a lane: renormalize (pushing a word), then take the
    interval [lo, lo + fr). Returns (state, buffer, word count)."""
    if (x >> 32) >= fr:
        buf = _push_word(buf, nw, x & WORD_MASK)
        nw += 1
        x >>= 32
    return ((x // fr) << PROB_BITS) + (x % fr) + lo, buf, nw


@_jit
def _reversed_words(buf: np.ndarray, nw: int) -> np.ndarray:
    out = np.empty(nw, dtype=np.uint32)
    for i in range(nw):
        out[i] = buf[nw - 1 - i]
    return out


@_jit
def _refill(xl: int, words: np.ndarray, pos: int, early: bool) -> tuple[int, int, bool]:
    """Decoder renormalization of one lane: (state, next word, stream ran out)."""
    if xl < STATE_LOW:
        if early or pos >= words.shape[0]:
            return xl, pos, True
        return (xl << 32) | np.int64(words[pos]), pos + 1, early
    return xl, pos, early


@_jit
def _end_status(x: np.ndarray, pos: int, n_words: int, final: bool) -> int:
    """OK if the decoder used every word and every lane is back at its initial state,
    or if the stream goes on after this run (not ``final``)."""
    if not final:
        return OK
    if pos != n_words:
        return INCONSISTENT
    for lane in range(x.shape[0]):
        if x[lane] != STATE_LOW:
            return INCONSISTENT
    return OK


@_jit
def _counts_used(seen: np.ndarray, counts: np.ndarray, r0: int, live: int) -> bool:
    """Whether the counts an encoder rebuilt from a group's symbols (``seen``, one row
    per lane) are the rows' given counts, as the model requires."""
    for lane in range(live):
        for c in range(counts.shape[1]):
            if seen[lane, c] != counts[r0 + lane, c]:
                return False
    return True


@_jit
def encode_kernel(
    cls: np.ndarray,
    counts: np.ndarray,
    totals: np.ndarray,
    has_totals: bool,
    lanes: int,
    capacity: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Multiset model encoder: (states, words, status). Classes must be in [0, N)."""
    rows, m = cls.shape
    n = counts.shape[1]
    groups = (rows + lanes - 1) // lanes
    x = np.full(lanes, STATE_LOW, dtype=np.int64)
    tree = np.zeros((lanes, n + 1), dtype=np.int64)  # Fenwick trees of the suffix counts
    cnt = np.zeros((lanes, n), dtype=np.int64)
    buf = np.empty(max(capacity, 16), dtype=np.uint32)
    nw = 0
    for g in range(groups - 1, -1, -1):
        r0 = g * lanes
        live = min(lanes, rows - r0)  # lanes past ``live`` pad: identity steps
        tree[:live] = 0
        cnt[:live] = 0
        for j in range(m - 1, -1, -1):
            for lane in range(live - 1, -1, -1):
                r = r0 + lane
                v = cls[r, j]
                cnt[lane, v] += 1
                i = v + 1
                while i <= n:
                    tree[lane, i] += 1
                    i += i & -i
                below = 0
                i = v
                while i > 0:
                    below += tree[lane, i]
                    i -= i & -i
                total = totals[r, j] if has_totals else m - j
                if total <= 0:
                    return x, np.empty(0, dtype=np.uint32), FALLBACK
                lo = (below << PROB_BITS) // total
                fr = ((below + cnt[lane, v]) << PROB_BITS) // total - lo
                if fr <= 0:
                    return x, np.empty(0, dtype=np.uint32), FALLBACK
                x[lane], buf, nw = _emit(x[lane], lo, fr, buf, nw)
        if not _counts_used(cnt, counts, r0, live):
            return x, np.empty(0, dtype=np.uint32), FALLBACK
    return x, _reversed_words(buf, nw), OK


@_jit
def encode_ctx_kernel(
    sym: np.ndarray,
    ctx: np.ndarray,
    counts: np.ndarray,
    weights: np.ndarray,
    lanes: int,
    capacity: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Context model encoder: (states, words, status). Symbols and contexts in [0, K)."""
    rows, m = sym.shape
    k = counts.shape[1]
    groups = (rows + lanes - 1) // lanes
    x = np.full(lanes, STATE_LOW, dtype=np.int64)
    rem = np.zeros((lanes, k), dtype=np.int64)  # counts of the symbols still to come
    buf = np.empty(max(capacity, 16), dtype=np.uint32)
    nw = 0
    for g in range(groups - 1, -1, -1):
        r0 = g * lanes
        live = min(lanes, rows - r0)
        rem[:live] = 0
        for j in range(m - 1, -1, -1):
            for lane in range(live - 1, -1, -1):
                r = r0 + lane
                t = sym[r, j]
                rl = rem[lane]
                rl[t] += 1
                off = k - 1 - ctx[r, j]
                wl = weights[off : off + k]
                below = 0
                total = 0
                for c in range(k):  # one branch-free pass: it vectorizes
                    p = rl[c] * wl[c]
                    total += p
                    below += p if c < t else 0
                if total <= 0:
                    return x, np.empty(0, dtype=np.uint32), FALLBACK
                hi_c = below + rl[t] * wl[t]
                lo = (below << PROB_BITS) // total
                fr = (hi_c << PROB_BITS) // total - lo
                if fr <= 0:
                    return x, np.empty(0, dtype=np.uint32), FALLBACK
                x[lane], buf, nw = _emit(x[lane], lo, fr, buf, nw)
        if not _counts_used(rem, counts, r0, live):
            return x, np.empty(0, dtype=np.uint32), FALLBACK
    return x, _reversed_words(buf, nw), OK


@_jit
def decode_kernel(
    x: np.ndarray,
    words: np.ndarray,
    counts: np.ndarray,
    totals: np.ndarray,
    has_totals: bool,
    m: int,
    top: int,
    final: bool,
) -> tuple[np.ndarray, int, int]:
    """Multiset model decoder, the loop of FORMAT 4.3.4 over the groups of the given
    rows, from ``words[0]`` (the stream where the previous run stopped) on: (classes
    (R, m), status, words used); only a ``final`` run checks the end of the stream.

    Follows the reference step for step, also where a damaged stream leads it: the
    class search clamps to N - 1, lanes with no counts keep their state, and a step
    reports a frequency <= 0 before it reports a missing word.
    """
    rows, n = counts.shape
    lanes = x.shape[0]
    groups = (rows + lanes - 1) // lanes
    n_words = words.shape[0]
    out = np.empty((rows, m), dtype=np.int64)
    tree = np.zeros((lanes, n + 1), dtype=np.int64)
    cnt = np.zeros((lanes, n), dtype=np.int64)
    active = np.zeros(lanes, dtype=np.bool_)
    pos = 0
    for g in range(groups):
        r0 = g * lanes
        live = min(lanes, rows - r0)
        for lane in range(live):
            have = 0
            tree[lane, 0] = 0
            for c in range(n):
                cnt[lane, c] = counts[r0 + lane, c]
                tree[lane, c + 1] = cnt[lane, c]
                have += cnt[lane, c]
            for i in range(1, n + 1):
                up = i + (i & -i)
                if up <= n:
                    tree[lane, up] += tree[lane, i]
            active[lane] = have > 0
        for j in range(m):
            early = False
            for lane in range(lanes):
                xl = x[lane]
                if lane < live:
                    r = r0 + lane
                    s = xl & _LOW_MASK
                    total = totals[r, j] if has_totals else m - j
                    c = ((s + 1) * total - 1) >> PROB_BITS
                    at = 0
                    left = c
                    step = top
                    while step:
                        nxt = at + step
                        if nxt <= n and tree[lane, nxt] <= left:
                            at = nxt
                            left -= tree[lane, nxt]
                        step >>= 1
                    at = min(at, n - 1)
                    below = c - left
                    out[r, j] = at
                    if active[lane]:
                        lo = (below << PROB_BITS) // total
                        fr = ((below + cnt[lane, at]) << PROB_BITS) // total - lo
                        if fr <= 0:
                            return out, INCONSISTENT, pos
                        cnt[lane, at] -= 1
                        i = at + 1
                        while i <= n:
                            tree[lane, i] -= 1
                            i += i & -i
                        xl = fr * (xl >> PROB_BITS) + s - lo
                xl, pos, early = _refill(xl, words, pos, early)
                x[lane] = xl
            if early:
                return out, ENDS_EARLY, pos
    return out, _end_status(x, pos, n_words, final), pos


@_jit
def decode_ctx_kernel(
    x: np.ndarray,
    words: np.ndarray,
    ctx: np.ndarray,
    counts: np.ndarray,
    weights: np.ndarray,
    final: bool,
) -> tuple[np.ndarray, int, int]:
    """Context model decoder (FORMAT 4.4.2 in the loop of 4.3.4), resumable like
    :func:`decode_kernel`: (symbols, status, words used).

    Needs weights >= 1 and counts >= 0, so that cumulative weights never decrease
    (remaining counts stay >= 0: a step that would take one from an empty bucket has
    frequency 0 and stops the decoder first).
    """
    rows, k = counts.shape
    m = ctx.shape[1]
    lanes = x.shape[0]
    groups = (rows + lanes - 1) // lanes
    n_words = words.shape[0]
    out = np.empty((rows, m), dtype=np.int64)
    rem = np.zeros((lanes, k), dtype=np.int64)
    prod = np.empty(k, dtype=np.int64)  # remaining count times weight, per bucket
    active = np.zeros(lanes, dtype=np.bool_)
    pos = 0
    for g in range(groups):
        r0 = g * lanes
        live = min(lanes, rows - r0)
        for lane in range(live):
            have = 0
            for c in range(k):
                rem[lane, c] = counts[r0 + lane, c]
                have += rem[lane, c]
            active[lane] = have > 0
        for j in range(m):
            early = False
            for lane in range(lanes):
                xl = x[lane]
                if lane < live:
                    r = r0 + lane
                    s = xl & _LOW_MASK
                    hint = ctx[r, j]
                    off = k - 1 - hint
                    rl = rem[lane]
                    wl = weights[off : off + k]
                    acc = 0
                    run = 0  # cumulative weight below the context bucket
                    for b in range(k):  # one branch-free pass: it vectorizes
                        part = rl[b] * wl[b]
                        prod[b] = part
                        acc += part
                        run += part if b < hint else 0
                    total = max(acc, 1)
                    c = ((s + 1) * total - 1) >> PROB_BITS
                    # The symbol is the first bucket whose cumulative weight exceeds c
                    # (K - 1 if none), which is what the reference's count of cumulative
                    # weights <= c gives, as they never decrease (weights >= 1, counts
                    # >= 0). The search starts at the context, where the symbol mostly is.
                    if run <= c:
                        t = hint
                        while t < k and run + prod[t] <= c:
                            run += prod[t]
                            t += 1
                        if t == k:
                            t = k - 1
                            lo_c, hi_c = acc - prod[t], acc
                        else:
                            lo_c, hi_c = run, run + prod[t]
                    else:
                        t = hint - 1
                        hi_c = run
                        lo_c = hi_c - prod[t]
                        while lo_c > c:
                            t -= 1
                            hi_c = lo_c
                            lo_c = hi_c - prod[t]
                    out[r, j] = t
                    if active[lane]:
                        lo = (lo_c << PROB_BITS) // total
                        fr = (hi_c << PROB_BITS) // total - lo
                        if fr <= 0:
                            return out, INCONSISTENT, pos
                        rem[lane, t] -= 1
                        xl = fr * (xl >> PROB_BITS) + s - lo
                xl, pos, early = _refill(xl, words, pos, early)
                x[lane] = xl
            if early:
                return out, ENDS_EARLY, pos
    return out, _end_status(x, pos, n_words, final), pos


_levels = _jit(contract.levels)


@_jit
def _multiset_step(
    c: int, total: int, plain: bool, left: np.ndarray, cnt: np.ndarray, levels: int
) -> tuple[int, int, int]:
    """Symbol and interval (sym, lo, fr) of the step whose scaled state is ``c``.

    In a row of distinct values (``plain``) the c-th remaining value has exactly c
    remaining values below it: the symbol is c itself (a Lehmer digit). Otherwise one
    root-to-leaf pass down ``left`` (node n: remaining count of its left subtree)
    finds the class and the count below it and takes the class out of ``left`` and
    ``cnt``.
    """
    if plain:
        lo = (c << PROB_BITS) // total
        return c, lo, ((c + 1) << PROB_BITS) // total - lo
    below = 0
    rest = c
    node = 1
    for _ in range(levels):
        lc = np.int64(left[node])
        right = rest >= lc
        left[node] = lc if right else lc - 1
        rest = rest - lc if right else rest
        below = below + lc if right else below
        node = 2 * node + (1 if right else 0)
    v = node - (1 << levels)
    f = np.int64(cnt[v])
    cnt[v] = f - 1
    lo = (below << PROB_BITS) // total
    return v, lo, ((below + f) << PROB_BITS) // total - lo


@_jit
def _row_tree(counts: np.ndarray, r: int, levels: int, left: np.ndarray, sums: np.ndarray) -> None:
    """Fill ``left`` (node n: count of its left subtree's classes) for row r."""
    top = 1 << levels
    n = counts.shape[1]
    sums[:] = 0
    for c in range(n):
        sums[top + c] = counts[r, c]
    for node in range(top - 1, 0, -1):
        sums[node] = sums[2 * node] + sums[2 * node + 1]
        left[node] = sums[2 * node]


@_jit
def decode_mixed_kernel(
    x: np.ndarray,
    words: np.ndarray,
    counts: np.ndarray,
    distinct: np.ndarray,
    m: int,
    final: bool,
) -> tuple[np.ndarray, int, int]:
    """Multiset decoder without totals (the loop of FORMAT 4.3.4), built for speed and
    resumable like :func:`decode_kernel`: (code, status, words used).

    Each step is :func:`_multiset_step`: rows of m distinct values record Lehmer
    digits (:func:`lehmer_to_classes` turns them into classes), other rows classes.
    Output is (groups, m, lanes) in decoding order. With consistent counts no step has
    frequency 0, so the status is OK, ENDS_EARLY or INCONSISTENT (final states or
    unused words), as in the reference.
    """
    rows, n = counts.shape
    lanes = x.shape[0]
    groups = (rows + lanes - 1) // lanes
    n_words = words.shape[0]
    levels = _levels(n)
    top = 1 << levels
    out = np.zeros((groups, m, lanes), dtype=np.int64)
    left = np.zeros((lanes, top), dtype=np.int32)
    cnt = np.zeros((lanes, n), dtype=np.int32)
    sums = np.zeros(2 * top, dtype=np.int64)
    pos = 0
    for g in range(groups):
        r0 = g * lanes
        live = min(lanes, rows - r0)
        for lane in range(live):
            if distinct[r0 + lane]:
                continue
            _row_tree(counts, r0 + lane, levels, left[lane], sums)
            cnt[lane, :] = counts[r0 + lane, :]
        for j in range(m):
            total = m - j
            early = False
            for lane in range(lanes):
                xl = x[lane]
                if lane < live:
                    s = xl & _LOW_MASK
                    c = ((s + 1) * total - 1) >> PROB_BITS
                    sym, lo, fr = _multiset_step(
                        c, total, distinct[r0 + lane], left[lane], cnt[lane], levels
                    )
                    out[g, j, lane] = sym
                    xl = fr * (xl >> PROB_BITS) + s - lo
                xl, pos, early = _refill(xl, words, pos, early)
                x[lane] = xl
            if early:
                return out, ENDS_EARLY, pos
    return out, _end_status(x, pos, n_words, final), pos


_left_counts = _jit(contract.left_counts)


@_jit
def lehmer_to_classes(code: np.ndarray, distinct: np.ndarray) -> np.ndarray:
    """Class indices (rows, m) from the output (groups, m, lanes) of
    :func:`decode_mixed_kernel`: in a distinct row, digit c at step j is the c-th
    (from 0) class not yet taken (:func:`_lehmer_row`); other rows already hold
    classes."""
    _, m, lanes = code.shape
    rows = distinct.shape[0]
    base, levels = _left_counts(m)
    tree = np.empty_like(base)
    out = np.empty((rows, m), dtype=np.int64)
    for r in range(rows):
        g, lane = r // lanes, r % lanes
        for j in range(m):
            out[r, j] = code[g, j, lane]
        if distinct[r]:
            _lehmer_row(out[r], base, levels, tree)
    return out


@_jit
def _lehmer_row(digits: np.ndarray, base: np.ndarray, levels: int, tree: np.ndarray) -> None:
    """In place: Lehmer digits of one row of distinct values to class indices."""
    top = 1 << levels
    tree[:] = base
    for j in range(digits.shape[0]):
        rest = digits[j]
        node = 1
        for _ in range(levels):
            c = tree[node]
            right = rest >= c
            tree[node] = c if right else c - 1
            rest = rest - c if right else rest
            node = 2 * node + (1 if right else 0)
        digits[j] = node - top


@_jit
def _decode_lane(
    x: int,
    words: np.ndarray,
    pos: int,
    end: int,
    counts: np.ndarray,
    distinct: np.ndarray,
    r0: int,
    r1: int,
    out: np.ndarray,
    final: bool,
) -> tuple[int, int, int]:
    """Decode rows [r0, r1) of one lane from state ``x`` and its segment words[pos:end]
    into ``out`` (FORMAT 4.5: the loop of 4.3.4 on one lane): (state, next word,
    status). Only a ``final`` run (the lane's last rows) checks the segment's end."""
    m = out.shape[1]
    n = counts.shape[1]
    levels = _levels(n)
    top = 1 << levels
    left = np.zeros(top, dtype=np.int64)
    cnt = np.zeros(n, dtype=np.int64)
    sums = np.zeros(2 * top, dtype=np.int64)
    base, mlevels = _left_counts(m)
    tree = np.empty_like(base)
    for r in range(r0, r1):
        plain = distinct[r]
        if not plain:
            _row_tree(counts, r, levels, left, sums)
            for c in range(n):
                cnt[c] = counts[r, c]
        for j in range(m):
            total = m - j
            s = x & _LOW_MASK
            c = ((s + 1) * total - 1) >> PROB_BITS
            if plain:  # the common case, kept inline: the call measured ~25% slower here
                out[r, j] = c
                lo = (c << PROB_BITS) // total
                fr = ((c + 1) << PROB_BITS) // total - lo
            else:
                out[r, j], lo, fr = _multiset_step(c, total, False, left, cnt, levels)
            x = fr * (x >> PROB_BITS) + s - lo
            if x < STATE_LOW:
                if pos >= end:
                    return x, pos, ENDS_EARLY
                x = (x << 32) | np.int64(words[pos])
                pos += 1
        if plain:
            _lehmer_row(out[r], base, mlevels, tree)
    if final and (pos != end or x != STATE_LOW):
        return x, pos, INCONSISTENT
    return x, pos, OK


@_jit
def decode_rows_kernel(
    x: np.ndarray,
    starts: np.ndarray,
    words: np.ndarray,
    counts: np.ndarray,
    distinct: np.ndarray,
    bounds: np.ndarray,
    m: int,
    final: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lanes of a ``row-rans`` stream, lane l from state x[l] (updated in place) and
    its window words[starts[l]:starts[l+1]]: (classes (R, m), lane statuses, words
    each lane used). Lanes are independent (a GPU or threads could take them all at
    once); on the CPU the decoder takes a few lanes per call and keeps them serial,
    which also holds up on a busy machine, where threads that wait on each other
    collapse."""
    lanes = x.shape[0]
    out = np.zeros((counts.shape[0], m), dtype=np.int64)
    status = np.zeros(lanes, dtype=np.int64)
    used = np.zeros(lanes, dtype=np.int64)
    for lane in range(lanes):
        x[lane], pos, status[lane] = _decode_lane(
            x[lane],
            words,
            starts[lane],
            starts[lane + 1],
            counts,
            distinct,
            bounds[lane],
            bounds[lane + 1],
            out,
            final,
        )
        used[lane] = pos - starts[lane]
    return out, status, used


@_jit
def _row_intervals(
    cls: np.ndarray,
    counts: np.ndarray,
    distinct: np.ndarray,
    r: int,
    start: np.ndarray,
    freq: np.ndarray,
    tree: np.ndarray,
    left: np.ndarray,
) -> bool:
    """(start, freq) of every step of row r; False if the row does not match its counts.
    ``tree`` and ``left`` are scratch (a left-count tree, remaining counts or seen flags)."""
    m = cls.shape[1]
    n = counts.shape[1]
    plain = distinct[r]
    levels = _levels(m if plain else n)
    if plain:
        base, _ = _left_counts(m)
        tree[: base.shape[0]] = base
        left[:m] = 0  # seen flags
    else:
        _row_tree(counts, r, levels, tree, left)  # left: sums scratch, refilled below
        for c in range(n):
            left[c] = counts[r, c]
    for j in range(m):
        v = cls[r, j]
        total = m - j
        below = 0
        node = 1
        for d in range(levels - 1, -1, -1):
            right = (v >> d) & 1
            lc = tree[node]
            below += lc if right else 0
            tree[node] = lc if right else lc - 1
            node = 2 * node + right
        if plain:
            if left[v]:
                return False
            left[v] = 1
            f = 1
        else:
            f = left[v]
            if f <= 0:
                return False
            left[v] = f - 1
        lo = (below << PROB_BITS) // total
        start[j] = lo
        freq[j] = ((below + f) << PROB_BITS) // total - lo
    return True


@_jit
def encode_rows_kernel(
    cls: np.ndarray, counts: np.ndarray, distinct: np.ndarray, bounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Encoder of :func:`decode_rows_kernel`: (states, segment starts in ``buf``,
    buf, ok). Lane l writes its words backwards from ``bounds[l+1] * m`` (a step emits
    at most one word), so they end up in decoding order."""
    rows, m = cls.shape
    n = counts.shape[1]
    lanes = bounds.shape[0] - 1
    top = 1 << _levels(max(n, m))
    buf = np.empty(rows * m, dtype=np.uint32)
    x = np.empty(lanes, dtype=np.int64)
    seg = np.empty(lanes, dtype=np.int64)
    ok = np.ones(lanes, dtype=np.bool_)
    for lane in range(lanes):
        start = np.empty(m, dtype=np.int64)
        freq = np.empty(m, dtype=np.int64)
        tree = np.empty(top, dtype=np.int64)
        left = np.empty(2 * top, dtype=np.int64)
        xl = np.int64(STATE_LOW)
        wpos = bounds[lane + 1] * m
        for r in range(bounds[lane + 1] - 1, bounds[lane] - 1, -1):
            if not _row_intervals(cls, counts, distinct, r, start, freq, tree, left):
                ok[lane] = False
                break
            for j in range(m - 1, -1, -1):
                fr = freq[j]
                if (xl >> 32) >= fr:
                    wpos -= 1
                    buf[wpos] = np.uint32(xl & WORD_MASK)
                    xl >>= 32
                xl = ((xl // fr) << PROB_BITS) + (xl % fr) + start[j]
        x[lane] = xl
        seg[lane] = wpos
    return x, seg, buf, bool(ok.all())
