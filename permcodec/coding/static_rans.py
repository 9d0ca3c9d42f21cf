"""Interleaved rANS with static frequency tables: the reference coder of ``grid-rans``.

Each symbol is coded with one of a few fixed tables (frequencies summing to 2**15,
FORMAT 4.6): its row's group of tables, and in it the table of the context the previous
symbol of the row set (the sign and size of its grid index: neighbouring taps of a
convolution kernel have alike ones). A decoding step is a table lookup, a multiply and a refill, and
its cost does not depend on how many symbols the alphabet has. Rows are spread over lanes
as in ``row-rans`` (lane l codes rows [b[l], b[l+1]) into its own word segment,
:func:`permcodec.kernels.contract.lane_bounds`), so lanes decode independently.

The numpy functions here (``*_ref``) are the reference; :func:`encode` and :func:`decode`
run the compiled twins of ``permcodec.kernels.load("grid_c")`` where they are built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels
from ..errors import FormatError
from ..kernels.contract import ENDS_EARLY, INCONSISTENT, STATE_LOW, lane_bounds, stream_error
from .rans import encode_segments

#: Bits of a table's total: frequencies sum to 2**TABLE_BITS.
TABLE_BITS = 15
TABLE_ONE = 1 << TABLE_BITS
#: Most symbols a table may have (ESC included): every symbol needs a frequency >= 1
#: to be coded, and the tables are stored as u16.
MAX_SYMBOLS = TABLE_ONE


def normalize(counts: np.ndarray, one: int = TABLE_ONE) -> np.ndarray:
    """Frequencies (u16, summing to ``one`` per row of ``counts``) that keep
    every symbol with a count >= 1 at a frequency >= 1, close to proportional: each
    symbol gets its rounded share, then the largest absorbs the difference (or, where it
    cannot without falling below 1, the symbols in order of size give back in turn).
    An unused table (no counts) gives all to symbol 0."""
    counts = np.atleast_2d(np.asarray(counts, dtype=np.int64))
    total = counts.sum(axis=1, keepdims=True)
    share = counts * (one / np.maximum(total, 1))
    f = np.where(counts > 0, np.maximum(1, np.rint(share)), 0).astype(np.int64)
    f[total[:, 0] == 0, 0] = one
    diff = one - f.sum(axis=1)
    top = np.argmax(f, axis=1)
    easy = f[np.arange(len(f)), top] + diff >= 1
    f[np.arange(len(f))[easy], top[easy]] += diff[easy]
    for t in np.nonzero(~easy)[0]:  # rare: many symbols rounded up to 1
        d = int(diff[t])
        for s in np.argsort(-f[t], kind="stable"):
            take = min(-d, int(f[t, s]) - 1)
            f[t, s] -= take
            d += take
            if d == 0:
                break
    return f.astype(np.uint16)


def cumulative(freqs: np.ndarray) -> np.ndarray:
    """Start of every symbol's interval in each table, (C, A + 1) -> (C, A + 1) int64."""
    f = freqs.astype(np.int64)
    return np.cumsum(f, axis=1) - f


def check_tables(freqs: np.ndarray, name: str) -> None:
    """Every table's frequencies sum to :data:`TABLE_ONE` (else the stream is undefined)."""
    sums = freqs.astype(np.int64).sum(axis=1)
    if (sums != TABLE_ONE).any():
        bad = int(np.nonzero(sums != TABLE_ONE)[0][0])
        raise FormatError(
            f"tensor {name!r}: frequency table {bad} sums to {int(sums[bad])}, not {TABLE_ONE}"
        )


@dataclass(frozen=True)
class Tables:
    """What the symbols of a tensor are coded with: ``groups`` x ``contexts`` tables of
    ``A + 1`` frequencies (table ``g * contexts + c`` for row group g and context c), the
    group of each row, and the context each symbol sets for the next one in its row (the
    first of a row has context 0)."""

    freqs: np.ndarray  # (groups * contexts, A + 1) uint16
    table_of: np.ndarray  # (R,) uint8: each row's group
    ctx_of: np.ndarray  # (A + 1,) uint8
    contexts: int = 1

    def of_symbols(self, symbols: np.ndarray) -> np.ndarray:
        """(R, m) int64: the table every symbol is coded with."""
        ctx = np.zeros(symbols.shape, dtype=np.int64)
        ctx[:, 1:] = self.ctx_of.astype(np.int64)[symbols[:, :-1]]
        return self.table_of.astype(np.int64)[:, None] * self.contexts + ctx


def symbol_contexts(q_lo: int, symbols: int, contexts: int) -> np.ndarray:
    """(A + 1,) uint8: the context a symbol sets for the next, by the sign and size of
    its grid index q = q_lo + s: h + sign(q) * min(h, bit length of |q|) with h =
    (contexts - 1) // 2 (so h for q = 0, h +- 1 for |q| = 1, h +- 2 for 2..3, h +- 3
    for 4..7, ...); the escape (s = A) sets the last, contexts - 1. Neighbouring taps of
    a convolution kernel share sign and size."""
    half = (contexts - 1) // 2
    q = np.arange(symbols, dtype=np.int64) + q_lo
    size = np.zeros(symbols, dtype=np.int64)
    nz = q != 0
    size[nz] = np.floor(np.log2(np.abs(q[nz]))).astype(np.int64) + 1
    return np.append(half + np.sign(q) * np.minimum(size, half), contexts - 1).astype(np.uint8)


def encode(
    symbols: np.ndarray, tables: Tables, lanes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Code ``symbols`` (R, m), each with its table (:meth:`Tables.of_symbols`), lane l
    coding rows [b[l], b[l+1]) into its own segment. Returns (states, segment lengths,
    words of lane 0, lane 1, ... each in decoding order)."""
    k = kernels.load("grid_c")
    if k is not None:  # refuses a symbol of frequency 0 itself
        return k.encode(symbols, tables.table_of, tables.freqs, tables.ctx_of, tables.contexts,
                        lanes)  # fmt: skip
    return encode_ref(symbols, tables, lanes)


def _check_codable(symbols: np.ndarray, tables: Tables) -> None:
    """Every symbol has a nonzero frequency in its table."""
    if symbols.size and (tables.freqs[tables.of_symbols(symbols), symbols] == 0).any():
        raise ValueError("a symbol to code has frequency 0 in its table")


def decode(
    states: np.ndarray,
    lengths: np.ndarray,
    words: np.ndarray,
    tables: Tables,
    m: int,
    name: str = "?",
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode`: the symbols (R, m) as uint16, and how many of each
    lane's symbols are ``escape`` (the last symbol of the tables)."""
    check_stream(states, tables.freqs, name)
    k = kernels.load("grid_c")
    if k is None:
        return decode_ref(states, lengths, words, tables, m, name)
    status, out, escapes = k.decode(states, lengths, words, tables.table_of, tables.freqs,
                                    tables.ctx_of, tables.contexts, m)  # fmt: skip
    if status:
        raise stream_error(status, name)
    return out, escapes


def check_stream(states: np.ndarray, freqs: np.ndarray, name: str) -> None:
    """What a decoder checks before it runs: tables that sum to 2**15, states in range."""
    check_tables(freqs, name)
    if ((states < STATE_LOW) | (states >= np.uint64(1 << 63))).any():
        raise FormatError(f"tensor {name!r}: a lane state is outside [2**31, 2**63)")


def _schedule(bounds: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Row each lane codes in round ``t`` (its t-th row) and whether it has one."""
    row = bounds[:-1] + t
    live = row < bounds[1:]
    return np.where(live, row, 0), live


def encode_ref(
    symbols: np.ndarray, tables: Tables, lanes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference behind :func:`encode`: each symbol's interval in its table, coded
    by the lane-segment encoder of ``row-rans`` on a total of 2**15."""
    _check_codable(symbols, tables)
    tab = tables.of_symbols(symbols)
    sym = symbols.astype(np.int64)
    start = cumulative(tables.freqs)[tab, sym]
    return encode_segments(start, tables.freqs.astype(np.int64)[tab, sym], lanes, TABLE_BITS)


def lookup(freqs: np.ndarray) -> np.ndarray:
    """(C, 2**15) uint16: the symbol whose interval holds each slot of each table."""
    f = freqs.astype(np.int64)
    sym = np.arange(f.shape[1], dtype=np.uint16)
    return np.stack([np.repeat(sym, row) for row in f])


def lanes_step(
    x: np.ndarray,
    tab: np.ndarray,
    live: np.ndarray,
    model: tuple[np.ndarray, np.ndarray, np.ndarray],
    words: tuple[np.ndarray, np.ndarray, np.ndarray],
    name: str,
    bits: int = TABLE_BITS,
) -> tuple[np.ndarray, np.ndarray]:
    """One decoding step of every lane (the live ones move), lane i with table tab[i]:
    ``model`` is (the symbol of each slot, frequencies, starts) per table, ``words`` is
    (each lane's next word, its segment's end, the words), the first updated in place.
    Returns the states and the symbols (int64)."""
    lut, freqs, starts = model
    ptr, ends, stream = words
    slot = x & ((1 << bits) - 1)
    s = lut[tab, slot].astype(np.int64)
    x = np.where(live, freqs[tab, s] * (x >> bits) + slot - starts[tab, s], x)
    need = live & (x < STATE_LOW)
    if need.any():
        if (ptr[need] >= ends[need]).any():
            raise stream_error(ENDS_EARLY, name)
        x[need] = (x[need] << 32) | stream[ptr[need]]
        ptr[need] += 1
    return x, s


def decode_ref(
    states: np.ndarray,
    lengths: np.ndarray,
    words: np.ndarray,
    tables: Tables,
    m: int,
    name: str = "?",
) -> tuple[np.ndarray, np.ndarray]:
    """The reference behind :func:`decode`: all lanes step together, each reading its
    own segment; a lane must end with its segment used up and its state at 2**31."""
    rows = tables.table_of.shape[0]
    lanes = states.shape[0]
    check_stream(states, tables.freqs, name)
    bounds = lane_bounds(rows, lanes)
    ends = np.cumsum(lengths.astype(np.int64))
    ptr = ends - lengths.astype(np.int64)
    stream = words.astype(np.int64)
    lut = lookup(tables.freqs)
    f_all = tables.freqs.astype(np.int64)
    c_all = cumulative(tables.freqs)
    ctx_of = tables.ctx_of.astype(np.int64)
    escape = tables.freqs.shape[1] - 1
    base = tables.table_of.astype(np.int64) * tables.contexts
    x = states.astype(np.int64)
    out = np.zeros((rows, m), dtype=np.uint16)
    escapes = np.zeros(lanes, dtype=np.int64)
    rounds = int((bounds[1:] - bounds[:-1]).max()) if rows else 0
    for t in range(rounds):
        row, live = _schedule(bounds, t)
        ctx = np.zeros(lanes, dtype=np.int64)  # a row starts in context 0
        for j in range(m):
            tab = base[row] + ctx
            x, s = lanes_step(x, tab, live, (lut, f_all, c_all), (ptr, ends, stream), name)
            out[row[live], j] = s[live]
            escapes += live & (s == escape)
            ctx = ctx_of[s]
    if (ptr != ends).any() or (x != STATE_LOW).any():
        raise stream_error(INCONSISTENT, name)
    return out, escapes
