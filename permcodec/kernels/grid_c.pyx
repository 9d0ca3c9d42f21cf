# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled static-table rANS of ``grid-rans`` (the C of ``csrc/grid_rans.c``), with the
arguments and results of the numpy reference in :mod:`permcodec.coding.static_rans`,
whose checks of the input run first. The loops release the GIL."""

import numpy as np

from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t, uint8_t

cdef extern from "grid_rans.h":
    int PC_GRID_OK
    int PC_GRID_NO_MEMORY
    int PC_GRID_BAD_ESCAPES
    int pc_grid_decode(const uint64_t *states, const uint32_t *lengths, const uint32_t *words,
                       const uint8_t *group, const uint16_t *freqs, const uint8_t *ctx_of,
                       int64_t contexts, int64_t n_tables, int64_t n_symbols, int64_t rows,
                       int64_t m, int64_t lanes, uint16_t *out, int64_t *escapes) nogil
    int pc_grid_decode_values(const uint64_t *states, const uint32_t *lengths,
                              const uint32_t *words, const uint8_t *group,
                              const uint16_t *freqs, const uint8_t *ctx_of, int64_t contexts,
                              int64_t n_tables, int64_t n_symbols, int64_t rows, int64_t m,
                              int64_t lanes, const double *row_steps, int64_t q_lo,
                              const float *outliers, const uint32_t *lane_outliers,
                              float *values, int64_t *escapes) nogil
    int64_t pc_grid_encode(const uint16_t *symbols, const uint8_t *group,
                           const uint16_t *freqs, const uint8_t *ctx_of, int64_t contexts,
                           int64_t n_tables, int64_t n_symbols, int64_t rows, int64_t m,
                           int64_t lanes, uint64_t *states, uint32_t *lengths,
                           uint32_t *words) nogil
    void pc_grid_round(const double *values, const double *row_steps, int64_t rows,
                       int64_t m, int64_t limit, int64_t *q) nogil
    void pc_grid_count(const uint16_t *symbols, int64_t rows, int64_t m, const int64_t *group,
                       const uint8_t *ctx_of, int64_t contexts, int64_t n_symbols,
                       int64_t *counts) nogil
    int64_t pc_grid_symbols(const int64_t *q, int64_t n, int64_t q_lo, int64_t width,
                            uint16_t *symbols) nogil
    int pc_grid_spread(const uint16_t *symbols, int64_t rows, int64_t m, int64_t n_symbols,
                       double *spread) nogil
    void pc_grid_values(const uint16_t *symbols, int64_t rows, int64_t m,
                        const double *row_steps, int64_t q_lo, int64_t escape,
                        float *out) nogil

#: Interface version checked by permcodec.kernels.load.
API = 3


def decode(states, lengths, words, table_of, freqs, ctx_of, int64_t contexts, int64_t m):
    """(status, symbols (R, m) uint16, escapes per lane int64) of a checked stream."""
    cdef const uint64_t[::1] st = np.ascontiguousarray(states, dtype=np.uint64)
    cdef const uint32_t[::1] ln = np.ascontiguousarray(lengths, dtype=np.uint32)
    cdef const uint32_t[::1] wd = np.ascontiguousarray(words, dtype=np.uint32)
    cdef const uint8_t[::1] tb = np.ascontiguousarray(table_of, dtype=np.uint8)
    cdef const uint16_t[:, ::1] fq = np.ascontiguousarray(freqs, dtype=np.uint16)
    cdef const uint8_t[::1] cx = np.ascontiguousarray(ctx_of, dtype=np.uint8)
    cdef int64_t rows = tb.shape[0], lanes = st.shape[0]
    out = np.empty((rows, m), dtype=np.uint16)
    esc = np.zeros(lanes, dtype=np.int64)
    cdef uint16_t[:, ::1] o = out
    cdef int64_t[::1] e = esc
    cdef int status
    cdef const uint32_t *wp = &wd[0] if wd.shape[0] else NULL
    cdef uint16_t *op = &o[0, 0] if rows * m else NULL
    with nogil:
        status = pc_grid_decode(&st[0], &ln[0], wp, &tb[0] if rows else NULL, &fq[0, 0],
                                &cx[0], contexts, fq.shape[0], fq.shape[1], rows, m, lanes, op,
                                &e[0])
    if status == PC_GRID_NO_MEMORY:
        raise MemoryError("grid-rans decoder tables")
    return status, out, esc


#: Status of :func:`decode_values` when a lane's escapes are not its count of outliers.
BAD_ESCAPES = PC_GRID_BAD_ESCAPES


def decode_values(states, lengths, words, table_of, freqs, ctx_of, int64_t contexts,
                  int64_t m, row_steps, int64_t q_lo, outliers, lane_outliers):
    """(status, float32 values (R, m)) of a checked stream: :func:`decode` and
    :func:`values` in one pass, each escape taking its lane's next outlier (lane l's
    ``lane_outliers[l]`` of ``outliers`` come after the earlier lanes')."""
    cdef const uint64_t[::1] st = np.ascontiguousarray(states, dtype=np.uint64)
    cdef const uint32_t[::1] ln = np.ascontiguousarray(lengths, dtype=np.uint32)
    cdef const uint32_t[::1] wd = np.ascontiguousarray(words, dtype=np.uint32)
    cdef const uint8_t[::1] tb = np.ascontiguousarray(table_of, dtype=np.uint8)
    cdef const uint16_t[:, ::1] fq = np.ascontiguousarray(freqs, dtype=np.uint16)
    cdef const uint8_t[::1] cx = np.ascontiguousarray(ctx_of, dtype=np.uint8)
    cdef const double[::1] rs = np.ascontiguousarray(row_steps, dtype=np.float64)
    cdef const float[::1] ol = np.ascontiguousarray(outliers, dtype=np.float32)
    cdef const uint32_t[::1] lo = np.ascontiguousarray(lane_outliers, dtype=np.uint32)
    cdef int64_t rows = tb.shape[0], lanes = st.shape[0]
    if lo.shape[0] != lanes or rs.shape[0] != rows:
        raise ValueError("one outlier count per lane and one step per row")
    out = np.empty((rows, m), dtype=np.float32)
    esc = np.zeros(lanes, dtype=np.int64)
    cdef float[:, ::1] o = out
    cdef int64_t[::1] e = esc
    cdef int status
    cdef const uint32_t *wp = &wd[0] if wd.shape[0] else NULL
    cdef const float *op = &ol[0] if ol.shape[0] else NULL
    cdef float *vp = &o[0, 0] if rows * m else NULL
    with nogil:
        status = pc_grid_decode_values(&st[0], &ln[0], wp, &tb[0] if rows else NULL,
                                       &fq[0, 0], &cx[0], contexts, fq.shape[0], fq.shape[1],
                                       rows, m, lanes, &rs[0] if rows else NULL, q_lo, op,
                                       &lo[0], vp, &e[0])
    if status == PC_GRID_NO_MEMORY:
        raise MemoryError("grid-rans decoder tables")
    return status, out


def encode(symbols, table_of, freqs, ctx_of, int64_t contexts, int64_t lanes):
    """(states, segment lengths, words) of rows of symbols, as the reference gives them."""
    cdef const uint16_t[:, ::1] sy = np.ascontiguousarray(symbols, dtype=np.uint16)
    cdef const uint8_t[::1] tb = np.ascontiguousarray(table_of, dtype=np.uint8)
    cdef const uint16_t[:, ::1] fq = np.ascontiguousarray(freqs, dtype=np.uint16)
    cdef const uint8_t[::1] cx = np.ascontiguousarray(ctx_of, dtype=np.uint8)
    cdef int64_t rows = sy.shape[0], m = sy.shape[1]
    states = np.empty(lanes, dtype=np.uint64)
    lengths = np.empty(lanes, dtype=np.uint32)
    words = np.empty(max(rows * m, 1), dtype=np.uint32)
    cdef uint64_t[::1] st = states
    cdef uint32_t[::1] ln = lengths
    cdef uint32_t[::1] wd = words
    cdef int64_t n
    with nogil:
        n = pc_grid_encode(&sy[0, 0] if rows * m else NULL, &tb[0] if rows else NULL,
                           &fq[0, 0], &cx[0], contexts, fq.shape[0], fq.shape[1], rows, m,
                           lanes, &st[0], &ln[0], &wd[0])
    if n == -2:
        raise ValueError("a symbol to code has frequency 0 in its table")
    if n < 0:
        raise MemoryError("grid-rans encoder tables")
    return states, lengths, words[:n].copy()


def values(symbols, row_steps, int64_t q_lo, int64_t escape):
    """float32 values of symbols (R, m) on their rows' steps; 0 at escapes."""
    cdef const uint16_t[:, ::1] sy = np.ascontiguousarray(symbols, dtype=np.uint16)
    cdef const double[::1] rs = np.ascontiguousarray(row_steps, dtype=np.float64)
    cdef int64_t rows = sy.shape[0], m = sy.shape[1]
    out = np.empty((rows, m), dtype=np.float32)
    cdef float[:, ::1] o = out
    if rows * m:
        with nogil:
            pc_grid_values(&sy[0, 0], rows, m, &rs[0], q_lo, escape, &o[0, 0])
    return out


def round_to_grid(values, row_steps, int64_t limit):
    """int64 (R, m): clip(rint(values / row_steps[:, None]), -limit, limit) of finite
    float64 ``values``, in one pass."""
    cdef const double[:, ::1] v = np.ascontiguousarray(values, dtype=np.float64)
    cdef const double[::1] rs = np.ascontiguousarray(row_steps, dtype=np.float64)
    cdef int64_t rows = v.shape[0], m = v.shape[1]
    if rs.shape[0] != rows:
        raise ValueError("one step per row")
    out = np.empty((rows, m), dtype=np.int64)
    cdef int64_t[:, ::1] o = out
    if rows * m:
        with nogil:
            pc_grid_round(&v[0, 0], &rs[0], rows, m, limit, &o[0, 0])
    return out


def count(symbols, group, ctx_of, int64_t contexts, int64_t groups):
    """int64 counts (groups, contexts, n_symbols) of each row's symbols by the row's group
    and the context of the symbol before (context 0 for a row's first)."""
    cdef const uint16_t[:, ::1] sy = np.ascontiguousarray(symbols, dtype=np.uint16)
    cdef const int64_t[::1] gr = np.ascontiguousarray(group, dtype=np.int64)
    cdef const uint8_t[::1] cx = np.ascontiguousarray(ctx_of, dtype=np.uint8)
    cdef int64_t rows = sy.shape[0], m = sy.shape[1], n = cx.shape[0]
    if gr.shape[0] != rows:
        raise ValueError("one group per row")
    if rows and (np.asarray(group).min() < 0 or np.asarray(group).max() >= groups):
        raise ValueError("a group out of range")
    if rows * m and (np.asarray(symbols).max() >= n or np.asarray(ctx_of).max() >= contexts):
        raise ValueError("a symbol or context out of range")
    out = np.zeros((groups, contexts, n), dtype=np.int64)
    cdef int64_t[:, :, ::1] o = out
    if rows * m:
        with nogil:
            pc_grid_count(&sy[0, 0], rows, m, &gr[0], &cx[0], contexts, n, &o[0, 0, 0])
    return out


def symbols_of(q, int64_t q_lo, int64_t width):
    """(uint16 symbols of int64 grid indices ``q``: q - q_lo, or ``width`` for the
    escape outside [q_lo, q_lo + width); the number of escapes)."""
    if not 0 < width < 65535:
        raise ValueError("alphabet width out of range")
    cdef const int64_t[::1] qq = np.ascontiguousarray(q, dtype=np.int64).reshape(-1)
    out = np.empty(np.shape(q), dtype=np.uint16)
    cdef uint16_t[::1] o = out.reshape(-1)
    cdef int64_t n = qq.shape[0], escaped = 0
    if n:
        with nogil:
            escaped = pc_grid_symbols(&qq[0], n, q_lo, width, &o[0])
    return out, int(escaped)


def spread(symbols, int64_t n_symbols):
    """Each row's mean distance of its symbols from the most common symbol overall."""
    cdef const uint16_t[:, ::1] sy = np.ascontiguousarray(symbols, dtype=np.uint16)
    cdef int64_t rows = sy.shape[0], m = sy.shape[1]
    if rows * m and np.asarray(symbols).max() >= n_symbols:
        raise ValueError("a symbol out of range")
    out = np.empty(rows, dtype=np.float64)
    cdef double[::1] o = out
    cdef int status = 0
    if rows:
        with nogil:
            status = pc_grid_spread(&sy[0, 0] if rows * m else NULL, rows, m, n_symbols, &o[0])
    if status == PC_GRID_NO_MEMORY:
        raise MemoryError("grid-rans spread")
    return out
