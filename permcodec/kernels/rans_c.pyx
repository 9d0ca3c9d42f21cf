# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled (ahead of time, with Cython) rANS kernels, bit-identical to the numpy
reference of :mod:`permcodec.coding.rans`, behind the input checks of
:mod:`.rans_host`. All arithmetic is exact 64-bit integer arithmetic: states live in
[2**31, 2**63), probabilities in 31 bits, and no product leaves 63 bits. Loops release
the GIL, so runs of lanes decode side by side on threads.
"""

import numpy as np

from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t, uint8_t
from libc.stdlib cimport free, malloc, realloc

cdef extern from *:
    """
    #include <stdint.h>
    #include <stdlib.h>
    #define PC_PROB_BITS (((int64_t)31))
    #define PC_LOW_MASK (((int64_t)0x7FFFFFFF))
    #define PC_STATE_LOW (((int64_t)0x80000000))
    #define PC_WORD_MASK (((int64_t)0xFFFFFFFF))
    #define PC_OK (((int64_t)0))
    #define PC_INCONSISTENT (((int64_t)1))
    #define PC_ENDS_EARLY (((int64_t)2))
    #define PC_FALLBACK (((int64_t)3))

    /* Division of a small numerator by a total of at most m by one multiplication:
       q = (a * ceil(2**63 / d)) >> 63 is floor(a / d) exactly whenever
       a * (ceil(2**63 / d) * d - 2**63) < 2**63, which a < 2**47 and d < 2**16 ensure.
       Elsewhere (or without 128-bit integers) it divides. */
    #define PC_RECIP_MAX_D ((int64_t)65535)
    #define PC_RECIP_MAX_A ((int64_t)1 << 47)
    static inline int64_t pc_div(int64_t a, int64_t d, const uint64_t* recip, int64_t nrecip) {
    #if defined(__SIZEOF_INT128__)
        if ((uint64_t)d < (uint64_t)nrecip && (uint64_t)a < (uint64_t)PC_RECIP_MAX_A)
            return (int64_t)(((unsigned __int128)(uint64_t)a * recip[d]) >> 63);
    #endif
        return a / d;
    }
    /* a[i] -= x[i] and b[i] -= y[i] for i < n (the context decoder's totals, at most
       2**31: 32 bits each, four to a 128-bit register). */
    static inline void pc_sub_pair(uint32_t* __restrict a, const uint32_t* __restrict x,
                                   uint32_t* __restrict b, const uint32_t* __restrict y,
                                   int64_t n) {
        int64_t i;
        for (i = 0; i < n; i++) {
            a[i] -= x[i];
            b[i] -= y[i];
        }
    }
    /* sum of a[i] * b[i] for i < n. */
    static inline int64_t pc_dot(const int64_t* __restrict a, const int64_t* __restrict b,
                                 int64_t n) {
        int64_t i, acc = 0;
        for (i = 0; i < n; i++)
            acc += a[i] * b[i];
        return acc;
    }
    /* recip[d] for d = 1 .. PC_RECIP_MAX_D, made once (512 KiB, never freed) by the
       first kernel that asks, with the GIL held; *n = 0 if it cannot be allocated. */
    static uint64_t* pc_recip = NULL;
    static uint64_t* pc_recip_table(int64_t* n) {
        int64_t d;
        if (!pc_recip) {
            uint64_t* t = (uint64_t*)malloc((size_t)(PC_RECIP_MAX_D + 1) * sizeof(uint64_t));
            if (t) {
                t[0] = 0;
                for (d = 1; d <= PC_RECIP_MAX_D; d++)
                    t[d] = (((uint64_t)1 << 63) - 1) / (uint64_t)d + 1;
            }
            pc_recip = t;
        }
        *n = pc_recip ? PC_RECIP_MAX_D + 1 : 0;
        return pc_recip;
    }

    /* A hint to fetch the cache line at p (a no-op where the compiler has no such
       builtin); never faults, whatever p is. */
    static inline void pc_prefetch(const void* p) {
    #if defined(__GNUC__)
        __builtin_prefetch(p);
    #endif
    }
    /* One row from each of four row-rans lanes at once: the four state chains are
       independent, so their steps overlap in the pipeline. A lane whose row holds m
       distinct values (plain[k]) gets its Lehmer digits in out[k]; any other lane
       descends its row's tree (left[k], counts cnt[k], both updated; `levels` deep, as
       _multiset_step) and gets its class indices. Requires 1 <= m < nrecip (division
       by the table). Returns 0, with x and pos partly advanced, where a lane would read
       past its segment's end (the caller then decodes the row lane by lane). */
    static inline int pc_rows4(int64_t* x, int64_t* pos, const int64_t* end,
                               const uint32_t* words, int64_t m, const uint64_t* recip,
                               int64_t** out, const int* plain, int64_t** left,
                               int64_t** cnt, int levels) {
    #if defined(__SIZEOF_INT128__)
        int64_t x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
        int64_t p0 = pos[0], p1 = pos[1], p2 = pos[2], p3 = pos[3];
        int64_t e0 = end[0], e1 = end[1], e2 = end[2], e3 = end[3];
        int64_t top = (int64_t)1 << levels, j;
        int ok = 1, d;
        for (j = 0; j < m; j++) {
            int64_t total = m - j;
            uint64_t r = recip[total];
            #define PC_ROW_STEP(K, X, P, E)                                             \
            {                                                                          \
                int64_t s = X & PC_LOW_MASK;                                           \
                int64_t cc = ((s + 1) * total - 1) >> PC_PROB_BITS, below, f;          \
                if (plain[K]) {                                                        \
                    out[K][j] = cc;                                                    \
                    below = cc;                                                        \
                    f = 1;                                                             \
                } else {                                                               \
                    int64_t* lt = left[K];                                             \
                    int64_t rest = cc, node = 1;                                       \
                    below = 0;                                                         \
                    for (d = 0; d < levels; d++) {                                     \
                        int64_t lc = lt[node], go = rest >= lc, take = lc & -go;       \
                        rest -= take;                                                  \
                        below += take;                                                 \
                        lt[node] = lc - 1 + go;                                        \
                        node = 2 * node + go;                                          \
                    }                                                                  \
                    out[K][j] = node - top;                                            \
                    f = cnt[K][node - top];                                            \
                    cnt[K][node - top] = f - 1;                                        \
                }                                                                      \
                int64_t lo = (int64_t)(((unsigned __int128)(uint64_t)(below << PC_PROB_BITS) * r) >> 63); \
                int64_t hi = (int64_t)(((unsigned __int128)(uint64_t)((below + f) << PC_PROB_BITS) * r) >> 63); \
                X = (hi - lo) * (X >> PC_PROB_BITS) + s - lo;                          \
                if (X < PC_STATE_LOW) {                                                \
                    if (P >= E) { ok = 0; break; }                                     \
                    X = (X << 32) | (int64_t)words[P]; P++;                            \
                }                                                                      \
            }
            PC_ROW_STEP(0, x0, p0, e0)
            PC_ROW_STEP(1, x1, p1, e1)
            PC_ROW_STEP(2, x2, p2, e2)
            PC_ROW_STEP(3, x3, p3, e3)
            #undef PC_ROW_STEP
        }
        x[0] = x0; x[1] = x1; x[2] = x2; x[3] = x3;
        pos[0] = p0; pos[1] = p1; pos[2] = p2; pos[3] = p3;
        return ok;
    #else
        return 0;
    #endif
    }
    static inline int pc_has_int128(void) {
    #if defined(__SIZEOF_INT128__)
        return 1;
    #else
        return 0;
    #endif
    }

    /* Lehmer digits to class indices for four rows at once (see _lehmer_row), each over
       its own copy of the base tree (scratch: 4 x nbase ints). */
    static inline void pc_lehmer4(int64_t** digits, int64_t m, const int* base, int64_t nbase,
                                  int levels, int* scratch) {
        int64_t top = (int64_t)1 << levels, j, i;
        int d, k;
        int* trees = scratch;
        for (k = 0; k < 4; k++)
            for (i = 0; i < nbase; i++)
                trees[k * nbase + i] = base[i];
        int* t0 = trees; int* t1 = trees + nbase;
        int* t2 = trees + 2 * nbase; int* t3 = trees + 3 * nbase;
        for (j = 0; j < m; j++) {
            int64_t r0 = digits[0][j], r1 = digits[1][j], r2 = digits[2][j], r3 = digits[3][j];
            int64_t n0 = 1, n1 = 1, n2 = 1, n3 = 1;
            for (d = 0; d < levels; d++) {
                #define PC_LEHMER_LEVEL(T, R, N)                 \
                {                                               \
                    int64_t c = T[N];                           \
                    int64_t go = R >= c;                        \
                    R -= c & -go;                               \
                    T[N] = (int)(c - 1 + go);                   \
                    N = 2 * N + go;                             \
                }
                PC_LEHMER_LEVEL(t0, r0, n0)
                PC_LEHMER_LEVEL(t1, r1, n1)
                PC_LEHMER_LEVEL(t2, r2, n2)
                PC_LEHMER_LEVEL(t3, r3, n3)
                #undef PC_LEHMER_LEVEL
            }
            digits[0][j] = n0 - top; digits[1][j] = n1 - top;
            digits[2][j] = n2 - top; digits[3][j] = n3 - top;
        }
    }
    """
    int64_t pc_div(int64_t a, int64_t d, const uint64_t* recip, int64_t nrecip) noexcept nogil
    int pc_rows4(int64_t* x, int64_t* pos, const int64_t* end, const uint32_t* words,
                 int64_t m, const uint64_t* recip, int64_t** out, const int* plain,
                 int64_t** left, int64_t** cnt, int levels) noexcept nogil
    int pc_has_int128() noexcept nogil
    void pc_prefetch(const void* p) noexcept nogil
    void pc_lehmer4(int64_t** digits, int64_t m, const int* base, int64_t nbase, int levels,
                    int* trees) noexcept nogil
    uint64_t* pc_recip_table(int64_t* n) noexcept
    int64_t pc_dot(const int64_t* a, const int64_t* b, int64_t n) nogil
    void pc_sub_pair(uint32_t* a, const uint32_t* x, uint32_t* b, const uint32_t* y, int64_t n) nogil
    int64_t PROB_BITS "PC_PROB_BITS"
    int64_t LOW_MASK "PC_LOW_MASK"
    int64_t STATE_LOW "PC_STATE_LOW"
    int64_t WORD_MASK "PC_WORD_MASK"
    int64_t OK "PC_OK"
    int64_t INCONSISTENT "PC_INCONSISTENT"
    int64_t ENDS_EARLY "PC_ENDS_EARLY"
    int64_t FALLBACK "PC_FALLBACK"




#: The kernels' interface version: kernels.load refuses an extension built from another
#: (a stale in-place build), which would fail only when called.
API = 2

#: Trees at least this deep are descended without branches (see _multiset_step).
cdef int BRANCHLESS_LEVELS = 5


cdef inline int _levels_of(int64_t k) nogil:
    cdef int depth = 0
    while (<int64_t>1 << depth) < k:
        depth += 1
    return depth


def _levels(k):
    return _levels_of(k)


def _left_counts(int64_t m):
    """Implicit binary tree over m leaves (padded to 2**levels): entry n of node n holds
    how many real leaves its left subtree has. Returns (tree, levels)."""
    cdef int levels = _levels_of(m)
    cdef int64_t top = <int64_t>1 << levels
    tree_arr = np.zeros(max(top, 1), dtype=np.int32)
    cdef int[::1] tree = tree_arr
    cdef int depth
    cdef int64_t k, lo, span
    for depth in range(levels):
        span = top >> depth
        for k in range(<int64_t>1 << depth):
            lo = k * span
            tree[(<int64_t>1 << depth) + k] = <int>max(0, min(m, lo + span // 2) - lo)
    return tree_arr, levels


# ---------------------------------------------------------------- shared steps


cdef inline int64_t _refill(int64_t x, const uint32_t[::1] words, int64_t* pos, int* early) noexcept nogil:
    if x < STATE_LOW:
        if early[0] or pos[0] >= words.shape[0]:
            early[0] = 1
            return x
        x = (x << 32) | <int64_t>words[pos[0]]
        pos[0] += 1
    return x


cdef inline int _end_status(int64_t[::1] x, int64_t pos, int64_t n_words, bint final) noexcept nogil:
    cdef Py_ssize_t lane
    if not final:
        return OK
    if pos != n_words:
        return INCONSISTENT
    for lane in range(x.shape[0]):
        if x[lane] != STATE_LOW:
            return INCONSISTENT
    return OK


cdef inline void _leaf_tree(const int64_t* leaves, Py_ssize_t n, int levels, int64_t* left,
                            int64_t* sums) noexcept nogil:
    """``left`` (node n: count of its left subtree's leaves) over ``n`` leaves."""
    cdef int64_t top = <int64_t>1 << levels
    cdef Py_ssize_t c, node
    for c in range(n):
        sums[top + c] = leaves[c]
    for c in range(n, top):
        sums[top + c] = 0
    for node in range(top - 1, 0, -1):
        sums[node] = sums[2 * node] + sums[2 * node + 1]
        left[node] = sums[2 * node]


cdef inline void _row_tree(int64_t[:, ::1] counts, Py_ssize_t r, int levels, int64_t* left,
                           int64_t* sums) noexcept nogil:
    """``left`` (node n: count of its left subtree's classes) for row r."""
    _leaf_tree(&counts[r, 0], counts.shape[1], levels, left, sums)


cdef inline int64_t _descend(int64_t* left, int levels, int64_t c, int64_t* below) noexcept nogil:
    """Take one value from the class whose interval holds c in a tree of left-subtree
    counts (c below the remaining total): that class, and the count
    of the classes before it in below. Without branches: the directions are coin tosses."""
    cdef int64_t rest = c, node = 1, lc, go, take, acc = 0
    cdef int d
    for d in range(levels):
        if d + 3 < levels:
            pc_prefetch(&left[node << 3])  # this node's descendants three levels down
        lc = left[node]
        go = rest >= lc
        take = lc & -go
        rest -= take
        acc += take
        left[node] = lc - 1 + go
        node = 2 * node + go
    below[0] = acc
    return node - (<int64_t>1 << levels)


cdef inline int64_t _state_after(int64_t x, int64_t s, int64_t below, int64_t f, int64_t total,
                                 const uint64_t* recip, int64_t nrecip, int* bad) noexcept nogil:
    """The state after decoding the symbol of interval [below, below + f) of ``total``
    from state ``x`` (``s``: its low bits); ``bad`` set if that interval is empty."""
    cdef int64_t lo = pc_div(below << PROB_BITS, total, recip, nrecip)
    cdef int64_t fr = pc_div((below + f) << PROB_BITS, total, recip, nrecip) - lo
    if fr <= 0:
        bad[0] = 1
        return x
    return fr * (x >> PROB_BITS) + s - lo


cdef inline int64_t _multiset_step(int64_t c, int64_t total, int64_t* left, int64_t* cnt,
                                   int levels, int64_t* lo, int64_t* fr, const uint64_t* recip,
                                   int64_t nrecip) noexcept nogil:
    """Class and interval of the step whose scaled state is c, from a row's tree. Over a
    few classes (ternary, levels) the directions are skewed and branches predict well;
    over many (float rows with some repeats) they are coin tosses, so no branches."""
    cdef int64_t below = 0, rest = c, node = 1, lc, v, f
    cdef int d
    if levels < BRANCHLESS_LEVELS:
        for d in range(levels):
            lc = left[node]
            if rest >= lc:
                rest -= lc
                below += lc
                node = 2 * node + 1
            else:
                left[node] = lc - 1
                node = 2 * node
        v = node - (<int64_t>1 << levels)
    else:
        v = _descend(left, levels, c, &below)
    f = cnt[v]
    cnt[v] = f - 1
    lo[0] = pc_div(below << PROB_BITS, total, recip, nrecip)
    fr[0] = pc_div((below + f) << PROB_BITS, total, recip, nrecip) - lo[0]
    return v


cdef inline void _lehmer_row(int64_t* digits, Py_ssize_t m, const int[::1] base, int levels,
                             int* tree) noexcept nogil:
    """In place: Lehmer digits of one row of distinct values to class indices."""
    cdef int64_t top = <int64_t>1 << levels, rest, node, c, go
    cdef Py_ssize_t j, i
    cdef int d
    for i in range(base.shape[0]):
        tree[i] = base[i]
    for j in range(m):
        rest = digits[j]
        node = 1
        for d in range(levels):
            c = tree[node]
            go = rest >= c
            rest -= c & -go
            tree[node] = <int>(c - 1 + go)
            node = 2 * node + go
        digits[j] = node - top


# ---------------------------------------------------------------- row-rans lanes


cdef int _decode_lane(int64_t* x, const uint32_t[::1] words, int64_t* pos, int64_t end,
                      int64_t[:, ::1] counts, const uint8_t[::1] distinct, Py_ssize_t r0,
                      Py_ssize_t r1, int64_t[:, ::1] out, bint final, const int[::1] base,
                      int mlevels, const uint64_t* recip, int64_t nrecip, int64_t* left,
                      int64_t* cnt, int64_t* sums, int* tree) noexcept nogil:
    """Rows [r0, r1) of one lane from its state and segment words[pos:end], with the
    caller's scratch: left (top), cnt (n), sums (2 top), tree (the base's length)."""
    cdef Py_ssize_t m = out.shape[1], n = counts.shape[1], r, j, c
    cdef int levels = _levels_of(n)
    cdef int64_t top = <int64_t>1 << levels
    cdef int64_t xl = x[0], total, s, cc, lo, fr
    cdef int status = OK
    cdef bint plain
    for r in range(r0, r1):
        plain = distinct[r] != 0
        if not plain:
            _row_tree(counts, r, levels, left, sums)
            for c in range(n):
                cnt[c] = counts[r, c]
        for j in range(m):
            total = m - j
            s = xl & LOW_MASK
            cc = ((s + 1) * total - 1) >> PROB_BITS
            if plain:
                out[r, j] = cc
                lo = pc_div(cc << PROB_BITS, total, recip, nrecip)
                fr = pc_div((cc + 1) << PROB_BITS, total, recip, nrecip) - lo
            else:
                out[r, j] = _multiset_step(cc, total, left, cnt, levels, &lo, &fr, recip, nrecip)
            xl = fr * (xl >> PROB_BITS) + s - lo
            if xl < STATE_LOW:
                if pos[0] >= end:
                    status = ENDS_EARLY
                    break
                xl = (xl << 32) | <int64_t>words[pos[0]]
                pos[0] += 1
        if status != OK:
            break
        if plain:
            _lehmer_row(&out[r, 0], m, base, mlevels, tree)
    if status == OK and final and (pos[0] != end or xl != STATE_LOW):
        status = INCONSISTENT
    x[0] = xl
    return status


def decode_rows_kernel(int64_t[::1] x, int64_t[::1] starts, const uint32_t[::1] words,
                        int64_t[:, ::1] counts, distinct, int64_t[::1] bounds, int64_t m,
                        bint final):
    """Lanes of a ``row-rans`` stream: (classes (R, m), lane statuses, words used)."""
    cdef Py_ssize_t lanes = x.shape[0], lane
    out_arr = np.zeros((counts.shape[0], m), dtype=np.int64)
    status_arr = np.zeros(lanes, dtype=np.int64)
    used_arr = np.zeros(lanes, dtype=np.int64)
    cdef int64_t[:, ::1] out = out_arr
    cdef int64_t[::1] status = status_arr
    cdef int64_t[::1] used = used_arr
    cdef const uint8_t[::1] dist = np.ascontiguousarray(distinct, dtype=np.uint8)
    base_arr, mlevels = _left_counts(m)
    cdef const int[::1] base = base_arr
    cdef int ml = mlevels
    cdef int64_t pos, nrecip
    cdef const uint64_t* recip = pc_recip_table(&nrecip)
    cdef int64_t top = <int64_t>1 << _levels_of(counts.shape[1])
    cdef int64_t[::1] left = np.empty(4 * top, dtype=np.int64)
    cdef int64_t[::1] cnt = np.empty(4 * max(counts.shape[1], 1), dtype=np.int64)
    cdef int64_t[::1] sums = np.empty(2 * top, dtype=np.int64)
    cdef int[::1] tree = np.empty(max(4 * base.shape[0], 1), dtype=np.intc)
    cdef Py_ssize_t grouped = 0
    if pc_has_int128() and 0 < m < nrecip and words.shape[0] > 0:
        grouped = lanes - lanes % 4
    with nogil:
        for lane in range(0, grouped, 4):
            _decode_four_lanes(x, starts, words, counts, dist, bounds, lane, out, final, base,
                               ml, recip, nrecip, &left[0], &cnt[0], &sums[0], &tree[0],
                               status, used)
        for lane in range(grouped, lanes):
            pos = starts[lane]
            status[lane] = _decode_lane(&x[lane], words, &pos, starts[lane + 1], counts, dist,
                                        bounds[lane], bounds[lane + 1], out, final, base, ml,
                                        recip, nrecip, &left[0], &cnt[0], &sums[0], &tree[0])
            used[lane] = pos - starts[lane]
    return out_arr, status_arr, used_arr


cdef void _decode_four_lanes(int64_t[::1] x, int64_t[::1] starts, const uint32_t[::1] words,
                             int64_t[:, ::1] counts, const uint8_t[::1] dist,
                             int64_t[::1] bounds, Py_ssize_t lane0, int64_t[:, ::1] out,
                             bint final, const int[::1] base, int ml, const uint64_t* recip,
                             int64_t nrecip, int64_t* left, int64_t* cnt, int64_t* sums,
                             int* tree, int64_t[::1] status, int64_t[::1] used) noexcept nogil:
    """Lanes lane0 .. lane0+3 row by row: while each of them has a row left, the four
    rows decode together (pc_rows4, then pc_lehmer4 or _lehmer_row for rows of distinct
    values); once a lane is done, or where a lane runs out of words, rows decode lane
    by lane (_decode_lane). Each lane computes exactly what it computes alone: its own
    state, words and status. Scratch: left 4 x top, cnt 4 x n, tree 4 x base."""
    cdef Py_ssize_t m = out.shape[1], n = counts.shape[1], k, lane, c
    cdef int levels = _levels_of(n)
    cdef int64_t top = <int64_t>1 << levels
    cdef int64_t xs[4]
    cdef int64_t pos[4]
    cdef int64_t ends[4]
    cdef int64_t xs0[4]
    cdef int64_t pos0[4]
    cdef int64_t row[4]
    cdef int64_t* rows_out[4]
    cdef int64_t* lefts[4]
    cdef int64_t* cnts[4]
    cdef int plain[4]
    cdef int st[4]
    cdef bint together, all_plain, more = True
    for k in range(4):
        lane = lane0 + k
        xs[k] = x[lane]
        pos[k] = starts[lane]
        ends[k] = starts[lane + 1]
        row[k] = bounds[lane]
        st[k] = OK
        lefts[k] = left + k * top
        cnts[k] = cnt + k * n
    while more:
        together = True
        for k in range(4):
            if st[k] != OK or row[k] >= bounds[lane0 + k + 1]:
                together = False
        if together:
            all_plain = True
            for k in range(4):
                rows_out[k] = &out[row[k], 0]
                xs0[k] = xs[k]
                pos0[k] = pos[k]
                plain[k] = dist[row[k]] != 0
                if not plain[k]:
                    all_plain = False
                    _row_tree(counts, row[k], levels, lefts[k], sums)
                    for c in range(n):
                        cnts[k][c] = counts[row[k], c]
            if pc_rows4(xs, pos, ends, &words[0], m, recip, rows_out, plain, lefts, cnts, levels):
                if all_plain:
                    pc_lehmer4(rows_out, m, &base[0], base.shape[0], ml, tree)
                else:
                    for k in range(4):
                        if plain[k]:
                            _lehmer_row(rows_out[k], m, base, ml, tree)
                for k in range(4):
                    row[k] += 1
                continue
            for k in range(4):  # a lane ran out of words: this row lane by lane
                xs[k] = xs0[k]
                pos[k] = pos0[k]
        more = False
        for k in range(4):
            lane = lane0 + k
            if st[k] == OK and row[k] < bounds[lane + 1]:
                st[k] = _decode_lane(&xs[k], words, &pos[k], starts[lane + 1], counts, dist,
                                     row[k], row[k] + 1, out, False, base, ml, recip, nrecip,
                                     left, cnt, sums, tree)
                row[k] += 1
                more = True
    for k in range(4):
        lane = lane0 + k
        if st[k] == OK and final and (pos[k] != starts[lane + 1] or xs[k] != STATE_LOW):
            st[k] = INCONSISTENT
        x[lane] = xs[k]
        status[lane] = st[k]
        used[lane] = pos[k] - starts[lane]


cdef bint _row_intervals(int64_t[:, ::1] cls, int64_t[:, ::1] counts, bint plain, Py_ssize_t r,
                         int64_t* start, int64_t* freq, int64_t* tree, int64_t* left,
                         const int[::1] base) noexcept nogil:
    """(start, freq) of every step of row r; False if the row does not match its counts."""
    cdef Py_ssize_t m = cls.shape[1], n = counts.shape[1], j, c
    cdef int levels = _levels_of(m if plain else n)
    cdef int64_t total, below, node, lc, v, f
    cdef int d
    if plain:
        for c in range(base.shape[0]):
            tree[c] = base[c]
        for c in range(m):
            left[c] = 0
    else:
        _row_tree(counts, r, levels, tree, left)
        for c in range(n):
            left[c] = counts[r, c]
    for j in range(m):
        v = cls[r, j]
        total = m - j
        below = 0
        node = 1
        for d in range(levels - 1, -1, -1):
            lc = tree[node]
            if (v >> d) & 1:
                below += lc
                node = 2 * node + 1
            else:
                tree[node] = lc - 1
                node = 2 * node
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
        start[j] = (below << PROB_BITS) // total
        freq[j] = ((below + f) << PROB_BITS) // total - start[j]
    return True


def encode_rows_kernel(int64_t[:, ::1] cls, int64_t[:, ::1] counts, distinct,
                        int64_t[::1] bounds):
    """Encoder of ``row-rans``: (states, segment starts in ``buf``, buf, ok)."""
    cdef Py_ssize_t rows = cls.shape[0], m = cls.shape[1], n = counts.shape[1]
    cdef Py_ssize_t lanes = bounds.shape[0] - 1, lane, r, j
    cdef int64_t top = <int64_t>1 << _levels_of(max(n, m))
    buf_arr = np.empty(rows * m, dtype=np.uint32)
    x_arr = np.empty(lanes, dtype=np.int64)
    seg_arr = np.empty(lanes, dtype=np.int64)
    cdef uint32_t[::1] buf = buf_arr
    cdef int64_t[::1] xs = x_arr
    cdef int64_t[::1] seg = seg_arr
    cdef const uint8_t[::1] dist = np.ascontiguousarray(distinct, dtype=np.uint8)
    base_arr, _ = _left_counts(m)
    cdef const int[::1] base = base_arr
    cdef bint ok = True
    cdef int64_t xl, wpos, fr
    cdef int64_t[::1] start_v = np.empty(max(max(m, 1), 1), dtype=np.int64)
    cdef int64_t* start = &start_v[0]
    cdef int64_t[::1] freq_v = np.empty(max(max(m, 1), 1), dtype=np.int64)
    cdef int64_t* freq = &freq_v[0]
    cdef int64_t[::1] tree_v = np.empty(max(2 * top, 1), dtype=np.int64)
    cdef int64_t* tree = &tree_v[0]
    cdef int64_t[::1] left_v = np.empty(max(2 * top, 1), dtype=np.int64)
    cdef int64_t* left = &left_v[0]
    with nogil:
        for lane in range(lanes):
            xl = STATE_LOW
            wpos = bounds[lane + 1] * m
            for r in range(bounds[lane + 1] - 1, bounds[lane] - 1, -1):
                if not _row_intervals(cls, counts, dist[r] != 0, r, start, freq, tree, left, base):
                    ok = False
                    break
                for j in range(m - 1, -1, -1):
                    fr = freq[j]
                    if (xl >> 32) >= fr:
                        wpos -= 1
                        buf[wpos] = <uint32_t>(xl & WORD_MASK)
                        xl >>= 32
                    xl = ((xl // fr) << PROB_BITS) + (xl % fr) + start[j]
            xs[lane] = xl
            seg[lane] = wpos
    return x_arr, seg_arr, buf_arr, bool(ok)


# ---------------------------------------------------------------- groups of lanes


def decode_mixed_kernel(int64_t[::1] x, const uint32_t[::1] words, int64_t[:, ::1] counts,
                         distinct, int64_t m, bint final):
    """Multiset decoder without totals over groups of lanes: (code (G, m, lanes),
    status, words used); distinct rows hold Lehmer digits."""
    cdef Py_ssize_t rows = counts.shape[0], n = counts.shape[1], lanes = x.shape[0]
    cdef Py_ssize_t groups = (rows + lanes - 1) // lanes, g, lane, live, j, c
    cdef int levels = _levels_of(n)
    cdef int64_t top = <int64_t>1 << levels
    out_arr = np.zeros((groups, m, lanes), dtype=np.int64)
    cdef int64_t[:, :, ::1] out = out_arr
    cdef const uint8_t[::1] dist = np.ascontiguousarray(distinct, dtype=np.uint8)
    cdef int64_t[::1] left_v = np.empty(max(lanes * top, 1), dtype=np.int64)
    cdef int64_t* left = &left_v[0]
    cdef int64_t[::1] cnt_v = np.empty(max(lanes * max(n, 1), 1), dtype=np.int64)
    cdef int64_t* cnt = &cnt_v[0]
    cdef int64_t[::1] sums_v = np.empty(max(2 * top, 1), dtype=np.int64)
    cdef int64_t* sums = &sums_v[0]
    cdef int64_t pos = 0, xl, total, s, cc, lo, fr, sym, r0, nrecip
    cdef const uint64_t* recip = pc_recip_table(&nrecip)
    cdef int early = 0, status = OK
    with nogil:
        for g in range(groups):
            r0 = g * lanes
            live = min(lanes, rows - r0)
            for lane in range(live):
                if dist[r0 + lane]:
                    continue
                _row_tree(counts, r0 + lane, levels, &left[lane * top], sums)
                for c in range(n):
                    cnt[lane * n + c] = counts[r0 + lane, c]
            for j in range(m):
                total = m - j
                early = 0
                for lane in range(lanes):
                    xl = x[lane]
                    if lane < live:
                        s = xl & LOW_MASK
                        cc = ((s + 1) * total - 1) >> PROB_BITS
                        if dist[r0 + lane]:
                            sym = cc
                            lo = pc_div(cc << PROB_BITS, total, recip, nrecip)
                            fr = pc_div((cc + 1) << PROB_BITS, total, recip, nrecip) - lo
                        else:
                            sym = _multiset_step(cc, total, &left[lane * top], &cnt[lane * n],
                                                 levels, &lo, &fr, recip, nrecip)
                        out[g, j, lane] = sym
                        xl = fr * (xl >> PROB_BITS) + s - lo
                    xl = _refill(xl, words, &pos, &early)
                    x[lane] = xl
                if early:
                    status = ENDS_EARLY
                    break
            if status != OK:
                break
        if status == OK:
            status = _end_status(x, pos, words.shape[0], final)
    return out_arr, status, pos


def lehmer_to_classes(code_arr, distinct):
    """Class indices (rows, m) from the (groups, m, lanes) output of the mixed decoder."""
    cdef int64_t[:, :, ::1] code = code_arr
    cdef const uint8_t[::1] dist = np.ascontiguousarray(distinct, dtype=np.uint8)
    cdef Py_ssize_t m = code.shape[1], lanes = code.shape[2], rows = dist.shape[0], r, j
    out_arr = np.empty((rows, m), dtype=np.int64)
    cdef int64_t[:, ::1] out = out_arr
    base_arr, levels = _left_counts(m)
    cdef const int[::1] base = base_arr
    cdef int lv = levels
    cdef int[::1] tree_v = np.empty(max(base.shape[0], 1), dtype=np.intc)
    cdef int* tree = &tree_v[0]
    with nogil:
        for r in range(rows):
            for j in range(m):
                out[r, j] = code[r // lanes, j, r % lanes]
            if dist[r]:
                _lehmer_row(&out[r, 0], m, base, lv, tree)
    return out_arr


def decode_kernel(int64_t[::1] x, const uint32_t[::1] words, int64_t[:, ::1] counts,
                   int64_t[:, ::1] totals, bint has_totals, int64_t m, int64_t top, bint final):
    """Multiset decoder over groups of lockstep lanes (segment totals allowed): (classes
    (R, m), status, words used). The class of a step is the reference's Fenwick search
    (the most classes whose counts sum to at most the scaled state, at most n - 1),
    found here by one descent of a tree of left-subtree counts per lane, which takes the
    value on its way down; ``top`` is unused (the Fenwick search's first step)."""
    cdef Py_ssize_t rows = counts.shape[0], n = counts.shape[1], lanes = x.shape[0]
    cdef Py_ssize_t groups = (rows + lanes - 1) // lanes, g, lane, live, j, c, r0
    cdef int levels = _levels_of(n)
    cdef int64_t span = <int64_t>1 << levels
    out_arr = np.empty((rows, m), dtype=np.int64)
    cdef int64_t[:, ::1] out = out_arr
    cdef int64_t[::1] left_v = np.empty(max(lanes * span, 1), dtype=np.int64)
    cdef int64_t* left = &left_v[0]
    cdef int64_t[::1] sums_v = np.empty(2 * span, dtype=np.int64)
    cdef int64_t* sums = &sums_v[0]
    cdef int64_t[::1] cnt_v = np.empty(max(lanes * max(n, 1), 1), dtype=np.int64)
    cdef int64_t* cnt = &cnt_v[0]
    cdef int64_t[::1] have_v = np.empty(max(lanes, 1), dtype=np.int64)
    cdef int64_t* have = &have_v[0]
    cdef uint8_t[::1] active_v = np.empty(max(lanes, 1), dtype=np.uint8)
    cdef uint8_t* active = &active_v[0]
    cdef int64_t pos = 0, xl, total, cc, at, below
    cdef int64_t nrecip
    cdef int64_t ss[4]
    cdef int64_t tt[4]
    cdef int64_t ats[4]
    cdef int64_t bel[4]
    cdef Py_ssize_t l0, blk, q
    cdef const uint64_t* recip = pc_recip_table(&nrecip)
    cdef int early = 0, status = OK, bad = 0
    cdef int64_t[::1] saved
    if has_totals:
        saved = np.array(x)
        refined = _decode_refinement(x, words, counts, totals, m, final)
        if refined[1] != FALLBACK:
            return refined
        x[:] = saved  # totals that are not a bucket-major row's: the general search
    with nogil:
        for g in range(groups):
            r0 = g * lanes
            live = min(lanes, rows - r0)
            for lane in range(live):
                have[lane] = 0
                for c in range(n):
                    cnt[lane * n + c] = counts[r0 + lane, c]
                    have[lane] += counts[r0 + lane, c]
                _row_tree(counts, r0 + lane, levels, &left[lane * span], sums)
                active[lane] = have[lane] > 0
            for j in range(m):
                early = 0
                # lanes four at a time: their descents first, so that they overlap; then
                # each lane's interval, state and refill in lane order, as the shared
                # word stream requires
                for l0 in range(0, lanes, 4):
                    blk = min(4, lanes - l0)
                    for q in range(blk):
                        lane = l0 + q
                        if lane < live:
                            ss[q] = x[lane] & LOW_MASK
                            tt[q] = totals[r0 + lane, j] if has_totals else m - j
                            cc = ((ss[q] + 1) * tt[q] - 1) >> PROB_BITS
                            # at or past the remaining total (an inactive lane, or
                            # damage): the search ends on the last class. Its tree needs
                            # no update then: the last class's left-subtree counts only
                            # steer between it and empty padding, which a state below
                            # the remaining total never reaches.
                            if cc >= have[lane]:
                                ats[q] = n - 1
                                bel[q] = have[lane]
                            else:
                                ats[q] = _descend(&left[lane * span], levels, cc, &bel[q])
                    for q in range(blk):
                        lane = l0 + q
                        xl = x[lane]
                        if lane < live:
                            at = ats[q]
                            total = tt[q]
                            below = bel[q]
                            out[r0 + lane, j] = at
                            if active[lane]:
                                xl = _state_after(xl, ss[q], below, cnt[lane * n + at], total,
                                                  recip, nrecip, &bad)
                                if bad:
                                    status = INCONSISTENT
                                    break
                                cnt[lane * n + at] -= 1
                                have[lane] -= 1
                        xl = _refill(xl, words, &pos, &early)
                        x[lane] = xl
                    if status != OK:
                        break
                if status != OK:
                    break
                if early:
                    status = ENDS_EARLY
                    break
            if status != OK:
                break
        if status == OK:
            status = _end_status(x, pos, words.shape[0], final)
    return out_arr, status, pos


cdef _decode_refinement(int64_t[::1] x, const uint32_t[::1] words, int64_t[:, ::1] counts,
                        int64_t[:, ::1] totals, int64_t m, bint final):
    """:func:`decode_kernel` for a bucket-major row (``totals``: the remaining count of
    the current bucket). A bucket's classes are the ones after those of the buckets
    before it, all used up by then, so each bucket gets a tree of its own classes: a
    descent of log2(its classes) levels that stays in the L1 cache, where one tree over
    the row takes log2(row) levels. Classes and statuses are the reference's; totals
    that do not fit that structure (a bucket that ends before its classes are used up,
    or whose classes do not sum to its total) return FALLBACK."""
    cdef Py_ssize_t rows = counts.shape[0], n = counts.shape[1], lanes = x.shape[0]
    cdef Py_ssize_t groups = (rows + lanes - 1) // lanes, g, lane, live, j, c, r0, r
    cdef int64_t span = <int64_t>1 << _levels_of(n)
    out_arr = np.empty((rows, m), dtype=np.int64)
    cdef int64_t[:, ::1] out = out_arr
    cdef int64_t[::1] left_v = np.empty(max(lanes * span, 1), dtype=np.int64)
    cdef int64_t* left = &left_v[0]
    cdef int64_t[::1] sums_v = np.empty(2 * span, dtype=np.int64)
    cdef int64_t* sums = &sums_v[0]
    cdef int64_t[::1] cnt_v = np.empty(max(lanes * max(n, 1), 1), dtype=np.int64)
    cdef int64_t* cnt = &cnt_v[0]
    # per lane: first class of its bucket, levels of the bucket's tree, last total
    cdef int64_t[::1] first_v = np.zeros(max(lanes, 1), dtype=np.int64)
    cdef int64_t* first = &first_v[0]
    cdef int[::1] depth_v = np.zeros(max(lanes, 1), dtype=np.intc)
    cdef int* depth = &depth_v[0]
    cdef int64_t[::1] last_v = np.zeros(max(lanes, 1), dtype=np.int64)
    cdef int64_t* last = &last_v[0]
    cdef int64_t pos = 0, xl, total, cc, at, below, c0, got, nb
    cdef int64_t nrecip
    cdef int64_t ss[4]
    cdef int64_t tt[4]
    cdef int64_t ats[4]
    cdef int64_t bel[4]
    cdef Py_ssize_t l0, blk, q
    cdef const uint64_t* recip = pc_recip_table(&nrecip)
    cdef int early = 0, status = OK, bad = 0
    with nogil:
        for g in range(groups):
            r0 = g * lanes
            live = min(lanes, rows - r0)
            for lane in range(live):
                for c in range(n):
                    cnt[lane * n + c] = counts[r0 + lane, c]
                first[lane] = 0
                last[lane] = 0
            for j in range(m):
                early = 0
                for l0 in range(0, lanes, 4):
                    blk = min(4, lanes - l0)
                    for q in range(blk):
                        lane = l0 + q
                        if lane < live:
                            r = r0 + lane
                            total = totals[r, j]
                            if j == 0 or total != last[lane] - 1:  # a bucket begins
                                if j != 0 and last[lane] != 1:
                                    status = FALLBACK  # the bucket before is not used up
                                    break
                                c0 = first[lane]
                                while c0 < n - 1 and cnt[lane * n + c0] == 0:
                                    c0 += 1
                                got = 0
                                nb = 0
                                while c0 + nb < n and got < total:
                                    got += cnt[lane * n + c0 + nb]
                                    nb += 1
                                if got != total:
                                    status = FALLBACK  # classes do not fill the bucket
                                    break
                                first[lane] = c0
                                depth[lane] = _levels_of(nb)
                                _leaf_tree(&cnt[lane * n + c0], nb, depth[lane],
                                           &left[lane * span], sums)
                            last[lane] = total
                            ss[q] = x[lane] & LOW_MASK
                            tt[q] = total  # at least 1: the host checks
                            cc = ((ss[q] + 1) * tt[q] - 1) >> PROB_BITS
                            ats[q] = first[lane] + _descend(&left[lane * span], depth[lane],
                                                            cc, &bel[q])
                    if status != OK:
                        break
                    for q in range(blk):
                        lane = l0 + q
                        xl = x[lane]
                        if lane < live:
                            at = ats[q]
                            total = tt[q]
                            below = bel[q]
                            out[r0 + lane, j] = at
                            xl = _state_after(xl, ss[q], below, cnt[lane * n + at], total,
                                              recip, nrecip, &bad)
                            if bad:
                                status = INCONSISTENT
                                break
                            cnt[lane * n + at] -= 1
                        xl = _refill(xl, words, &pos, &early)
                        x[lane] = xl
                    if status != OK:
                        break
                if status != OK:
                    break
                if early:
                    status = ENDS_EARLY
                    break
            if status != OK:
                break
        if status == OK:
            status = _end_status(x, pos, words.shape[0], final)
    return out_arr, status, pos


def init_buckets_kernel(const int64_t[:, ::1] packed, int64_t k):
    """From each init row's sorted (order key << 32 | position) words: the counts of its
    classes (R, N; N the most classes of a row, padded with zeros), the sorted position
    of each class's first value (R, N), the bucket of each position's initial value
    (R, m; bucket floor(first rank * k / m) of its class) and the values per bucket
    (R, k): what :func:`permcodec.coding.arrangement.init_classes` and
    :func:`permcodec.coding.buckets.bucketize` give a decoder, in two passes. None if
    a position is out of range."""
    cdef Py_ssize_t rows = packed.shape[0], m = packed.shape[1], r, p
    cdef int64_t n = 0, fewest = m, nc, c, b = 0, at
    cdef int bad = 0
    for r in range(rows):
        nc = 1 if m else 0
        for p in range(1, m):
            if (packed[r, p] >> 32) != (packed[r, p - 1] >> 32):
                nc += 1
        n = max(n, nc)
        fewest = min(fewest, nc)
    counts_arr = np.zeros((rows, n), dtype=np.int64)
    first_arr = np.zeros((rows, n), dtype=np.int64)
    ctx_arr = np.empty((rows, m), dtype=np.int64)
    per_bucket_arr = np.zeros((rows, k), dtype=np.int64)
    cdef int64_t[:, ::1] counts = counts_arr
    cdef int64_t[:, ::1] first = first_arr
    cdef int64_t[:, ::1] ctx = ctx_arr
    cdef int64_t[:, ::1] per_bucket = per_bucket_arr
    with nogil:
        for r in range(rows):
            c = -1
            for p in range(m):
                if p == 0 or (packed[r, p] >> 32) != (packed[r, p - 1] >> 32):
                    c += 1
                    first[r, c] = p
                    b = p * k // m
                counts[r, c] += 1
                at = packed[r, p] & WORD_MASK
                if at >= m:
                    bad = 1
                    break
                ctx[r, at] = b
                per_bucket[r, b] += 1
            if bad:
                break
    if bad:
        return None
    return counts_arr, first_arr, ctx_arr, per_bucket_arr, fewest == m


ctypedef fused word_t:
    uint16_t
    uint32_t
    uint64_t


def place_refined_kernel(const int64_t[:, ::1] seq, const int64_t[:, ::1] sym,
                         const word_t[:, ::1] values, int64_t k):
    """Rows of values (as words of their width) from a bucket-major refinement: the
    positions of bucket b, in ascending order, take the classes of its part of ``seq``
    in turn, and each position its class's value. None if a symbol or class is out of
    range (the numpy reference then decides)."""
    cdef Py_ssize_t rows = seq.shape[0], m = seq.shape[1], n = values.shape[1], r, p
    cdef int64_t b, c, acc, bad = 0
    out_arr = np.empty((rows, m), dtype=np.asarray(values).dtype)
    cdef word_t[:, ::1] out = out_arr
    cdef int64_t[::1] cursor_v = np.empty(max(k, 1), dtype=np.int64)
    cdef int64_t* cursor = &cursor_v[0]
    with nogil:
        for r in range(rows):
            for b in range(k):
                cursor[b] = 0
            for p in range(m):
                b = sym[r, p]
                if b < 0 or b >= k:
                    bad = 1
                    break
                cursor[b] += 1
            if bad:
                break
            acc = 0
            for b in range(k):
                c = cursor[b]
                cursor[b] = acc
                acc += c
            for p in range(m):
                c = seq[r, cursor[sym[r, p]]]
                cursor[sym[r, p]] += 1
                if c < 0 or c >= n:
                    bad = 1
                    break
                out[r, p] = values[r, c]
            if bad:
                break
    return None if bad else out_arr


def decode_ctx_kernel(int64_t[::1] x, const uint32_t[::1] words, int64_t[:, ::1] ctx,
                       int64_t[:, ::1] counts, int64_t[::1] weights, bint final):
    """Context model decoder: (symbols (R, m), status, words used). Each lane keeps, for
    every context i, the total T_i and the part L_i below bucket i of its weighted
    remaining counts, so a step reads them instead of summing all buckets, and a
    decoded bucket takes its weights off every T_i and L_i."""
    cdef Py_ssize_t rows = counts.shape[0], k = counts.shape[1], m = ctx.shape[1]
    cdef Py_ssize_t lanes = x.shape[0], groups = (rows + lanes - 1) // lanes, g, lane, live, j
    cdef Py_ssize_t b, t, r, r0, i
    out_arr = np.empty((rows, m), dtype=np.int64)
    cdef int64_t[:, ::1] out = out_arr
    cdef int64_t[::1] rem_v = np.empty(max(lanes * k, 1), dtype=np.int64)
    cdef int64_t* rem = &rem_v[0]
    # T_i, L_i and the weights in 32 bits (the weight bound keeps T_i within 2**31)
    cdef uint32_t[::1] tot_v = np.empty(max(lanes * k, 1), dtype=np.uint32)
    cdef uint32_t* tot = &tot_v[0]
    cdef uint32_t[::1] low_v = np.empty(max(lanes * k, 1), dtype=np.uint32)
    cdef uint32_t* low = &low_v[0]
    # wrev[k - 1 - t + i] = weights[t - i + k - 1]: bucket t's weight under context i
    cdef uint32_t[::1] wrev_v = np.ascontiguousarray(np.asarray(weights)[::-1]).astype(np.uint32)
    cdef uint32_t* wrev = &wrev_v[0]
    cdef const int64_t* w = &weights[0]
    # T_i and L_i pay for their k * k start per row when rows are long enough
    cdef bint incremental = 4 * k <= m
    # wabove[t * k + i]: the same weight where i > t (L_i loses it), else 0
    cdef uint32_t[::1] wabove_v = np.zeros(max(k * k if incremental else 1, 1), dtype=np.uint32)
    cdef uint32_t* wabove = &wabove_v[0]
    for t in range(k if incremental else 0):
        for i in range(t + 1, k):
            wabove[t * k + i] = wrev[k - 1 - t + i]
    cdef uint8_t[::1] active_v = np.empty(max(lanes, 1), dtype=np.uint8)
    cdef uint8_t* active = &active_v[0]
    cdef int64_t* rl
    cdef uint32_t* tl
    cdef uint32_t* ll
    cdef int64_t pos = 0, xl, s, hint, off, acc, run_, part, total, cc, lo_c, hi_c, lo, fr, have
    cdef int early = 0, status = OK
    with nogil:
        for g in range(groups):
            r0 = g * lanes
            live = min(lanes, rows - r0)
            for lane in range(live):
                rl = rem + lane * k
                tl = tot + lane * k
                ll = low + lane * k
                have = 0
                for b in range(k):
                    rl[b] = counts[r0 + lane, b]
                    have += rl[b]
                active[lane] = have > 0
                for i in range(k if incremental else 0):
                    run_ = pc_dot(rl, w + (k - 1 - i), i)
                    ll[i] = <uint32_t>run_
                    tl[i] = <uint32_t>(run_ + pc_dot(rl + i, w + (k - 1), k - i))
            for j in range(m):
                early = 0
                for lane in range(lanes):
                    xl = x[lane]
                    if lane < live:
                        r = r0 + lane
                        rl = rem + lane * k
                        s = xl & LOW_MASK
                        hint = ctx[r, j]
                        off = k - 1 - hint
                        if incremental:
                            acc = <int64_t>tot[lane * k + hint]
                            run_ = <int64_t>low[lane * k + hint]
                        else:
                            run_ = pc_dot(rl, w + off, hint)
                            acc = run_ + pc_dot(rl + hint, w + off + hint, k - hint)
                        total = acc if acc > 1 else 1
                        cc = ((s + 1) * total - 1) >> PROB_BITS
                        if run_ <= cc:
                            t = hint
                            part = rl[t] * w[off + t]
                            while run_ + part <= cc:
                                run_ += part
                                t += 1
                                if t == k:
                                    break
                                part = rl[t] * w[off + t]
                            if t == k:
                                t = k - 1
                                lo_c = acc - rl[t] * w[off + t]
                                hi_c = acc
                            else:
                                lo_c = run_
                                hi_c = run_ + part
                        else:
                            t = hint - 1
                            hi_c = run_
                            lo_c = hi_c - rl[t] * w[off + t]
                            while lo_c > cc:
                                t -= 1
                                hi_c = lo_c
                                lo_c = hi_c - rl[t] * w[off + t]
                        out[r, j] = t
                        if active[lane]:
                            lo = (lo_c << PROB_BITS) // total
                            fr = (hi_c << PROB_BITS) // total - lo
                            if fr <= 0:
                                status = INCONSISTENT
                                break
                            rl[t] -= 1
                            if incremental:
                                tl = tot + lane * k
                                ll = low + lane * k
                                pc_sub_pair(tl, wrev + (k - 1 - t), ll, wabove + t * k, k)
                            xl = fr * (xl >> PROB_BITS) + s - lo
                    xl = _refill(xl, words, &pos, &early)
                    x[lane] = xl
                if status != OK:
                    break
                if early:
                    status = ENDS_EARLY
                    break
            if status != OK:
                break
        if status == OK:
            status = _end_status(x, pos, words.shape[0], final)
    return out_arr, status, pos


# ---------------------------------------------------------------- group encoders


cdef inline int64_t _emit(int64_t x, int64_t lo, int64_t fr, uint32_t** buf, int64_t* cap,
                          int64_t* nw, int* oom) noexcept nogil:
    """Encode one step into state x, pushing a word to buf (grown by doubling; sets
    *oom and leaves x where the memory runs out)."""
    cdef uint32_t* grown
    if (x >> 32) >= fr:
        if nw[0] == cap[0]:
            grown = <uint32_t*>realloc(buf[0], 2 * cap[0] * sizeof(uint32_t))
            if grown == NULL:
                oom[0] = 1
                return x
            buf[0] = grown
            cap[0] *= 2
        buf[0][nw[0]] = <uint32_t>(x & WORD_MASK)
        nw[0] += 1
        x >>= 32
    return ((x // fr) << PROB_BITS) + (x % fr) + lo


cdef object _words_out(uint32_t* buf, int64_t nw):
    out_arr = np.empty(nw, dtype=np.uint32)
    cdef uint32_t[::1] out = out_arr
    cdef int64_t i
    for i in range(nw):
        out[i] = buf[nw - 1 - i]
    return out_arr


def encode_kernel(int64_t[:, ::1] cls, int64_t[:, ::1] counts, int64_t[:, ::1] totals,
                   bint has_totals, int64_t lanes, int64_t capacity):
    """Multiset model encoder over groups of lanes: (states, words, status)."""
    cdef Py_ssize_t rows = cls.shape[0], m = cls.shape[1], n = counts.shape[1]
    cdef Py_ssize_t groups = (rows + lanes - 1) // lanes, g, lane, live, j, c, r, r0
    x_arr = np.full(lanes, STATE_LOW, dtype=np.int64)
    cdef int64_t[::1] x = x_arr
    cdef int64_t[::1] tree_v = np.empty(max(lanes * (n + 1), 1), dtype=np.int64)
    cdef int64_t* tree = &tree_v[0]
    cdef int64_t[::1] cnt_v = np.empty(max(lanes * max(n, 1), 1), dtype=np.int64)
    cdef int64_t* cnt = &cnt_v[0]
    cdef int64_t cap = max(capacity, 16), nw = 0, v, i, below, total, lo, fr
    cdef uint32_t* buf = <uint32_t*>malloc(cap * sizeof(uint32_t))
    cdef int status = OK, oom = 0
    if buf == NULL:
        raise MemoryError()
    with nogil:
        for g in range(groups - 1, -1, -1):
            r0 = g * lanes
            live = min(lanes, rows - r0)
            for lane in range(live):
                for c in range(n + 1):
                    tree[lane * (n + 1) + c] = 0
                for c in range(n):
                    cnt[lane * n + c] = 0
            for j in range(m - 1, -1, -1):
                for lane in range(live - 1, -1, -1):
                    r = r0 + lane
                    v = cls[r, j]
                    cnt[lane * n + v] += 1
                    i = v + 1
                    while i <= n:
                        tree[lane * (n + 1) + i] += 1
                        i += i & -i
                    below = 0
                    i = v
                    while i > 0:
                        below += tree[lane * (n + 1) + i]
                        i -= i & -i
                    total = totals[r, j] if has_totals else m - j
                    if total <= 0:
                        status = FALLBACK
                        break
                    lo = (below << PROB_BITS) // total
                    fr = ((below + cnt[lane * n + v]) << PROB_BITS) // total - lo
                    if fr <= 0:
                        status = FALLBACK
                        break
                    x[lane] = _emit(x[lane], lo, fr, &buf, &cap, &nw, &oom)
                    if oom:
                        status = FALLBACK
                        break
                if status != OK:
                    break
            if status != OK:
                break
            for lane in range(live):
                for c in range(n):
                    if cnt[lane * n + c] != counts[r0 + lane, c]:
                        status = FALLBACK
            if status != OK:
                break
    try:
        words = _words_out(buf, nw) if status == OK else np.empty(0, dtype=np.uint32)
    finally:
        free(buf)
    return x_arr, words, status


def encode_ctx_kernel(int64_t[:, ::1] sym, int64_t[:, ::1] ctx, int64_t[:, ::1] counts,
                       int64_t[::1] weights, int64_t lanes, int64_t capacity):
    """Context model encoder over groups of lanes: (states, words, status)."""
    cdef Py_ssize_t rows = sym.shape[0], m = sym.shape[1], k = counts.shape[1]
    cdef Py_ssize_t groups = (rows + lanes - 1) // lanes, g, lane, live, j, c, r, r0
    x_arr = np.full(lanes, STATE_LOW, dtype=np.int64)
    cdef int64_t[::1] x = x_arr
    cdef int64_t[::1] rem_v = np.empty(max(lanes * k, 1), dtype=np.int64)
    cdef int64_t* rem = &rem_v[0]
    cdef int64_t cap = max(capacity, 16), nw = 0, t, off, below, total, p, hi_c, lo, fr
    cdef uint32_t* buf = <uint32_t*>malloc(cap * sizeof(uint32_t))
    cdef int status = OK, oom = 0
    if buf == NULL:
        raise MemoryError()
    with nogil:
        for g in range(groups - 1, -1, -1):
            r0 = g * lanes
            live = min(lanes, rows - r0)
            for lane in range(live):
                for c in range(k):
                    rem[lane * k + c] = 0
            for j in range(m - 1, -1, -1):
                for lane in range(live - 1, -1, -1):
                    r = r0 + lane
                    t = sym[r, j]
                    rem[lane * k + t] += 1
                    off = k - 1 - ctx[r, j]
                    below = 0
                    total = 0
                    for c in range(k):
                        p = rem[lane * k + c] * weights[off + c]
                        total += p
                        if c < t:
                            below += p
                    if total <= 0:
                        status = FALLBACK
                        break
                    hi_c = below + rem[lane * k + t] * weights[off + t]
                    lo = (below << PROB_BITS) // total
                    fr = (hi_c << PROB_BITS) // total - lo
                    if fr <= 0:
                        status = FALLBACK
                        break
                    x[lane] = _emit(x[lane], lo, fr, &buf, &cap, &nw, &oom)
                    if oom:
                        status = FALLBACK
                        break
                if status != OK:
                    break
            if status != OK:
                break
            for lane in range(live):
                for c in range(k):
                    if rem[lane * k + c] != counts[r0 + lane, c]:
                        status = FALLBACK
            if status != OK:
                break
    try:
        words = _words_out(buf, nw) if status == OK else np.empty(0, dtype=np.uint32)
    finally:
        free(buf)
    return x_arr, words, status
