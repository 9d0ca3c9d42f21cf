/* The multiset rANS kernels of perm-rans, row-rans and bucket-rans: see multiset.h. */
#include "multiset.h"

#include <stdlib.h>
#include <string.h>

#define PC_ONE ((int64_t)1 << PC_PROB_BITS)
#define PC_LOW_MASK (PC_ONE - 1)
#define PC_STATE_LOW ((int64_t)1 << PC_STATE_LOW_BITS)
#define PC_WORD_MASK ((int64_t)0xFFFFFFFF)

/* Division of a small numerator by a total below 2**16 by one multiplication:
 * q = (a * ceil(2**63 / d)) >> 63 is floor(a / d) exactly whenever
 * a * (ceil(2**63 / d) * d - 2**63) < 2**63, which a < 2**47 and d < 2**16 ensure.
 * Elsewhere (or without 128-bit integers) it divides. */
#define PC_RECIP_MAX_A ((int64_t)1 << 47)

/* Trees at least this deep are descended without branches (see multiset_step). */
#define PC_BRANCHLESS_LEVELS 5

#if defined(__SIZEOF_INT128__)
__extension__ typedef unsigned __int128 pc_u128;
#define PC_HAS_U128 1
#else
#define PC_HAS_U128 0
#endif

/* ---------------------------------------------------------------- arithmetic */

/* int64 arithmetic that wraps as numpy's does, without signed overflow in C: the
 * operation in uint64, its bits read back as int64 (memcpy: exact, and compiled away). */
static inline int64_t pc_i64(uint64_t v) {
    int64_t r;
    memcpy(&r, &v, sizeof r);
    return r;
}
static inline int64_t pc_add(int64_t a, int64_t b) { return pc_i64((uint64_t)a + (uint64_t)b); }
static inline int64_t pc_sub(int64_t a, int64_t b) { return pc_i64((uint64_t)a - (uint64_t)b); }
static inline int64_t pc_mul(int64_t a, int64_t b) { return pc_i64((uint64_t)a * (uint64_t)b); }
static inline int64_t pc_shl(int64_t a, int k) { return pc_i64((uint64_t)a << k); }
/* a >> k rounding down, negative a included (one arithmetic shift, portably). */
static inline int64_t pc_sar(int64_t a, int k) { return a < 0 ? ~(~a >> k) : a >> k; }

/* The scaled state of a step: ((s + 1) * total - 1) >> 31, s the state's low 31 bits. */
static inline int64_t pc_scaled(int64_t s, int64_t total) {
    return pc_sar(pc_sub(pc_mul(s + 1, total), 1), PC_PROB_BITS);
}

/* The state after decoding a step of interval [lo, lo + fr) from x (s: its low bits). */
static inline int64_t pc_next(int64_t x, int64_t s, int64_t lo, int64_t fr) {
    return pc_add(pc_mul(fr, pc_sar(x, PC_PROB_BITS)), pc_sub(s, lo));
}

/* x taking in word w below it. */
static inline int64_t pc_take(int64_t x, uint32_t w) { return pc_i64(((uint64_t)x << 32) | w); }

/* floor(a / d) for 1 <= d, by the table where it applies (recip of nrecip entries). */
static inline int64_t pc_div(int64_t a, int64_t d, const uint64_t *recip, int64_t nrecip) {
#if PC_HAS_U128
    if ((uint64_t)d < (uint64_t)nrecip && (uint64_t)a < (uint64_t)PC_RECIP_MAX_A)
        return (int64_t)(((pc_u128)(uint64_t)a * recip[d]) >> 63);
#else
    (void)recip;
    (void)nrecip;
#endif
    return a / d;
}

/* A hint to fetch the cache line at p (a no-op where the compiler has no such
 * builtin); never faults. */
static inline void pc_prefetch(const void *p) {
#if defined(__GNUC__)
    __builtin_prefetch(p);
#else
    (void)p;
#endif
}

/* malloc of a x b elements of `size` bytes (each count at least 1); NULL where that
 * does not fit a size_t or the memory runs out. */
static void *pc_alloc(int64_t a, int64_t b, size_t size) {
    uint64_t ua = a < 1 ? 1 : (uint64_t)a, ub = b < 1 ? 1 : (uint64_t)b;
    if (ua > SIZE_MAX / size / ub)
        return NULL;
    return malloc((size_t)(ua * ub) * size);
}

static inline int64_t pc_min(int64_t a, int64_t b) { return a < b ? a : b; }

void pc_ms_recip_fill(uint64_t *table) {
    table[0] = 0;
    for (int64_t d = 1; d < PC_MS_RECIP_SIZE; d++)
        table[d] = (((uint64_t)1 << 63) - 1) / (uint64_t)d + 1;
}

/* ---------------------------------------------------------------- trees */

int pc_ms_levels(int64_t k) {
    int depth = 0;
    while (depth < 62 && ((int64_t)1 << depth) < k)
        depth++;
    return depth;
}

int pc_ms_left_counts(int64_t m, int32_t *tree) {
    int levels = pc_ms_levels(m);
    int64_t top = (int64_t)1 << levels;
    tree[0] = 0;
    for (int depth = 0; depth < levels; depth++) {
        int64_t span = top >> depth;
        for (int64_t k = 0; k < ((int64_t)1 << depth); k++) {
            int64_t lo = k * span, hi = pc_min(m, lo + span / 2);
            tree[((int64_t)1 << depth) + k] = (int32_t)(hi > lo ? hi - lo : 0);
        }
    }
    return levels;
}

/* left[v] (v in [1, 2**levels)): the values held by the leaves of node v's left
 * subtree, over the n leaves `leaves` padded with zeros; sums: scratch of 2 * 2**levels. */
static void leaf_tree(const int64_t *leaves, int64_t n, int levels, int64_t *left,
                      int64_t *sums) {
    int64_t top = (int64_t)1 << levels;
    for (int64_t c = 0; c < n; c++)
        sums[top + c] = leaves[c];
    for (int64_t c = n; c < top; c++)
        sums[top + c] = 0;
    for (int64_t node = top - 1; node > 0; node--) {
        sums[node] = sums[2 * node] + sums[2 * node + 1];
        left[node] = sums[2 * node];
    }
}

/* Take one value from the leaf whose interval holds c (0 <= c < the values left) in a
 * tree of left-subtree counts: that leaf, and the values of the leaves before it in
 * *below. Without branches: the directions are coin tosses. */
static inline int64_t descend(int64_t *left, int levels, int64_t c, int64_t *below) {
    int64_t rest = c, node = 1, acc = 0;
    for (int d = 0; d < levels; d++) {
        if (d + 3 < levels)
            pc_prefetch(&left[node << 3]); /* this node's descendants three levels down */
        int64_t lc = left[node], go = rest >= lc, take = lc & -go;
        rest -= take;
        acc += take;
        left[node] = lc - 1 + go;
        node = 2 * node + go;
    }
    *below = acc;
    return node - ((int64_t)1 << levels);
}

/* The state after decoding the interval [below, below + f) of `total` from x (s: its
 * low bits); *bad set, x returned, if that interval is empty. */
static inline int64_t state_after(int64_t x, int64_t s, int64_t below, int64_t f,
                                  int64_t total, const uint64_t *recip, int64_t nrecip,
                                  int *bad) {
    int64_t lo = pc_div(pc_shl(below, PC_PROB_BITS), total, recip, nrecip);
    int64_t fr = pc_sub(pc_div(pc_shl(pc_add(below, f), PC_PROB_BITS), total, recip, nrecip), lo);
    if (fr <= 0) {
        *bad = 1;
        return x;
    }
    return pc_next(x, s, lo, fr);
}

/* Class and interval of the step whose scaled state is c (0 <= c < total, the values
 * left in the row's tree). Over a few classes (ternary levels) the directions are
 * skewed and branches predict well; over many (float rows with some repeats) they are
 * coin tosses, so no branches. */
static inline int64_t multiset_step(int64_t c, int64_t total, int64_t *left, int64_t *cnt,
                                    int levels, int64_t *lo, int64_t *fr,
                                    const uint64_t *recip, int64_t nrecip) {
    int64_t below = 0, v;
    if (levels < PC_BRANCHLESS_LEVELS) {
        int64_t rest = c, node = 1;
        for (int d = 0; d < levels; d++) {
            int64_t lc = left[node];
            if (rest >= lc) {
                rest -= lc;
                below += lc;
                node = 2 * node + 1;
            } else {
                left[node] = lc - 1;
                node = 2 * node;
            }
        }
        v = node - ((int64_t)1 << levels);
    } else {
        v = descend(left, levels, c, &below);
    }
    int64_t f = cnt[v];
    cnt[v] = f - 1;
    *lo = pc_div(pc_shl(below, PC_PROB_BITS), total, recip, nrecip);
    *fr = pc_sub(pc_div(pc_shl(below + f, PC_PROB_BITS), total, recip, nrecip), *lo);
    return v;
}

/* In place: the Lehmer digits of one row of m distinct values to class indices, over a
 * copy (tree) of the base tree (pc_ms_left_counts(m), nbase entries). */
static void lehmer_row(int64_t *digits, int64_t m, const int32_t *base, int64_t nbase,
                       int levels, int32_t *tree) {
    int64_t top = (int64_t)1 << levels;
    memcpy(tree, base, (size_t)nbase * sizeof *tree);
    for (int64_t j = 0; j < m; j++) {
        int64_t rest = digits[j], node = 1;
        for (int d = 0; d < levels; d++) {
            int64_t c = tree[node], go = rest >= c;
            rest -= c & -go;
            tree[node] = (int32_t)(c - 1 + go);
            node = 2 * node + go;
        }
        digits[j] = node - top;
    }
}

/* lehmer_row for four rows at once, each over its own copy of the base tree
 * (scratch: 4 x nbase entries): four independent chains overlap in the pipeline. */
static void lehmer4(int64_t **digits, int64_t m, const int32_t *base, int64_t nbase,
                    int levels, int32_t *scratch) {
    int64_t top = (int64_t)1 << levels;
    for (int k = 0; k < 4; k++)
        memcpy(scratch + k * nbase, base, (size_t)nbase * sizeof *scratch);
    int32_t *t0 = scratch, *t1 = scratch + nbase, *t2 = scratch + 2 * nbase;
    int32_t *t3 = scratch + 3 * nbase;
    for (int64_t j = 0; j < m; j++) {
        int64_t r0 = digits[0][j], r1 = digits[1][j], r2 = digits[2][j], r3 = digits[3][j];
        int64_t n0 = 1, n1 = 1, n2 = 1, n3 = 1;
        for (int d = 0; d < levels; d++) {
#define PC_LEHMER_LEVEL(T, R, N)                                                           \
    {                                                                                      \
        int64_t c_ = T[N], go_ = R >= c_;                                                  \
        R -= c_ & -go_;                                                                    \
        T[N] = (int32_t)(c_ - 1 + go_);                                                    \
        N = 2 * N + go_;                                                                   \
    }
            PC_LEHMER_LEVEL(t0, r0, n0)
            PC_LEHMER_LEVEL(t1, r1, n1)
            PC_LEHMER_LEVEL(t2, r2, n2)
            PC_LEHMER_LEVEL(t3, r3, n3)
#undef PC_LEHMER_LEVEL
        }
        digits[0][j] = n0 - top;
        digits[1][j] = n1 - top;
        digits[2][j] = n2 - top;
        digits[3][j] = n3 - top;
    }
}

/* ---------------------------------------------------------------- shared steps */

/* Takes a word into x if it fell below 2**31 (none once the stream ran out: *early). */
static inline int64_t refill(int64_t x, const uint32_t *words, int64_t n_words, int64_t *pos,
                             int *early) {
    if (x < PC_STATE_LOW) {
        if (*early || *pos >= n_words) {
            *early = 1;
            return x;
        }
        x = pc_take(x, words[*pos]);
        (*pos)++;
    }
    return x;
}

static int end_status(const int64_t *x, int64_t lanes, int64_t pos, int64_t n_words,
                      int final) {
    if (!final)
        return PC_MS_OK;
    if (pos != n_words)
        return PC_MS_INCONSISTENT;
    for (int64_t lane = 0; lane < lanes; lane++)
        if (x[lane] != PC_STATE_LOW)
            return PC_MS_INCONSISTENT;
    return PC_MS_OK;
}

/* ---------------------------------------------------------------- row-rans lanes */

/* What every lane of a row-rans decode shares, and the scratch of one group of four:
 * left (4 x top), cnt (4 x n), sums (2 x top), tree (4 x nbase). */
typedef struct {
    const uint32_t *words;
    const int64_t *counts;
    int64_t counts_stride, n, top, m, out_stride, nbase, nrecip;
    const uint8_t *distinct;
    int64_t *out;
    const int32_t *base;
    const uint64_t *recip;
    int levels, mlevels;
    int64_t *left, *cnt, *sums;
    int32_t *tree;
} rows_job;

/* Rows [r0, r1) of one lane from its state *x and its words [*pos, end), with the
 * scratch of the group's first lane. */
static int decode_lane(const rows_job *job, int64_t *x, int64_t *pos, int64_t end, int64_t r0,
                       int64_t r1, int final) {
    const uint32_t *words = job->words;
    const int64_t m = job->m, n = job->n, nrecip = job->nrecip;
    const uint64_t *recip = job->recip;
    int64_t *left = job->left, *cnt = job->cnt;
    const int levels = job->levels;
    int64_t xl = *x, p = *pos;
    int status = PC_MS_OK;
    for (int64_t r = r0; r < r1; r++) {
        int plain = job->distinct[r] != 0;
        int64_t *o = job->out + r * job->out_stride;
        if (!plain) {
            const int64_t *row = job->counts + r * job->counts_stride;
            leaf_tree(row, n, levels, left, job->sums);
            for (int64_t c = 0; c < n; c++)
                cnt[c] = row[c];
        }
        for (int64_t j = 0; j < m; j++) {
            int64_t total = m - j, s = xl & PC_LOW_MASK, cc = pc_scaled(s, total), lo, fr;
            if (plain) {
                o[j] = cc;
                lo = pc_div(pc_shl(cc, PC_PROB_BITS), total, recip, nrecip);
                fr = pc_sub(pc_div(pc_shl(cc + 1, PC_PROB_BITS), total, recip, nrecip), lo);
            } else {
                o[j] = multiset_step(cc, total, left, cnt, levels, &lo, &fr, recip, nrecip);
            }
            xl = pc_next(xl, s, lo, fr);
            if (xl < PC_STATE_LOW) {
                if (p >= end) {
                    status = PC_MS_ENDS_EARLY;
                    break;
                }
                xl = pc_take(xl, words[p]);
                p++;
            }
        }
        if (status != PC_MS_OK)
            break;
        if (plain)
            lehmer_row(o, m, job->base, job->nbase, job->mlevels, job->tree);
    }
    if (status == PC_MS_OK && final && (p != end || xl != PC_STATE_LOW))
        status = PC_MS_INCONSISTENT;
    *x = xl;
    *pos = p;
    return status;
}

/* One row from each of four lanes at once: the four state chains are independent, so
 * their steps overlap in the pipeline. A lane whose row holds m distinct values
 * (plain[k]) gets its Lehmer digits in out[k]; any other lane descends its row's tree
 * (left[k], counts cnt[k], both updated; `levels` deep, as multiset_step) and gets its
 * class indices. Requires 1 <= m < nrecip (division by the table). Returns 0, with x
 * and pos partly advanced, where a lane would read past its segment's end (the caller
 * then decodes the row lane by lane). */
static int rows4(int64_t *x, int64_t *pos, const int64_t *end, const uint32_t *words,
                 int64_t m, const uint64_t *recip, int64_t **out, const int *plain,
                 int64_t **left, int64_t **cnt, int levels) {
#if PC_HAS_U128
    int64_t x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
    int64_t p0 = pos[0], p1 = pos[1], p2 = pos[2], p3 = pos[3];
    int64_t e0 = end[0], e1 = end[1], e2 = end[2], e3 = end[3];
    int64_t top = (int64_t)1 << levels;
    int ok = 1;
    for (int64_t j = 0; j < m; j++) {
        int64_t total = m - j;
        uint64_t rc = recip[total];
#define PC_ROW_STEP(K, X, P, E)                                                            \
    {                                                                                      \
        int64_t s_ = X & PC_LOW_MASK, c_ = pc_scaled(s_, total), below_, f_;               \
        if (plain[K]) {                                                                    \
            out[K][j] = c_;                                                                \
            below_ = c_;                                                                   \
            f_ = 1;                                                                        \
        } else {                                                                           \
            int64_t *lt_ = left[K], rest_ = c_, node_ = 1;                                 \
            below_ = 0;                                                                    \
            for (int d_ = 0; d_ < levels; d_++) {                                          \
                int64_t lc_ = lt_[node_], go_ = rest_ >= lc_, take_ = lc_ & -go_;          \
                rest_ -= take_;                                                            \
                below_ += take_;                                                           \
                lt_[node_] = lc_ - 1 + go_;                                                \
                node_ = 2 * node_ + go_;                                                   \
            }                                                                              \
            out[K][j] = node_ - top;                                                       \
            f_ = cnt[K][node_ - top];                                                      \
            cnt[K][node_ - top] = f_ - 1;                                                  \
        }                                                                                  \
        int64_t lo_ = (int64_t)(((pc_u128)((uint64_t)below_ << PC_PROB_BITS) * rc) >> 63);  \
        int64_t hi_ =                                                                      \
            (int64_t)(((pc_u128)((uint64_t)(below_ + f_) << PC_PROB_BITS) * rc) >> 63);    \
        X = pc_next(X, s_, lo_, hi_ - lo_);                                                \
        if (X < PC_STATE_LOW) {                                                            \
            if (P >= E) {                                                                  \
                ok = 0;                                                                    \
                break;                                                                     \
            }                                                                              \
            X = pc_take(X, words[P]);                                                      \
            P++;                                                                           \
        }                                                                                  \
    }
        PC_ROW_STEP(0, x0, p0, e0)
        PC_ROW_STEP(1, x1, p1, e1)
        PC_ROW_STEP(2, x2, p2, e2)
        PC_ROW_STEP(3, x3, p3, e3)
#undef PC_ROW_STEP
    }
    x[0] = x0;
    x[1] = x1;
    x[2] = x2;
    x[3] = x3;
    pos[0] = p0;
    pos[1] = p1;
    pos[2] = p2;
    pos[3] = p3;
    return ok;
#else
    (void)x, (void)pos, (void)end, (void)words, (void)m, (void)recip, (void)out;
    (void)plain, (void)left, (void)cnt, (void)levels;
    return 0;
#endif
}

/* Lanes lane0 .. lane0 + 3 row by row: while each of them has a row left, the four
 * rows decode together (rows4, then lehmer4 or lehmer_row for rows of distinct
 * values); once a lane is done, or where a lane runs out of words, rows decode lane by
 * lane (decode_lane). Each lane computes exactly what it computes alone: its own
 * state, words and status. */
static void decode_four_lanes(const rows_job *job, int64_t *x, const int64_t *starts,
                              const int64_t *bounds, int64_t lane0, int final,
                              int64_t *status, int64_t *used) {
    const int64_t n = job->n, m = job->m;
    int64_t xs[4], pos[4], ends[4], xs0[4], pos0[4], row[4];
    int64_t *rows_out[4], *lefts[4], *cnts[4];
    int plain[4], st[4], more = 1;
    for (int k = 0; k < 4; k++) {
        int64_t lane = lane0 + k;
        xs[k] = x[lane];
        pos[k] = starts[lane];
        ends[k] = starts[lane + 1];
        row[k] = bounds[lane];
        st[k] = PC_MS_OK;
        lefts[k] = job->left + k * job->top;
        cnts[k] = job->cnt + k * n;
    }
    while (more) {
        int together = 1;
        for (int k = 0; k < 4; k++)
            if (st[k] != PC_MS_OK || row[k] >= bounds[lane0 + k + 1])
                together = 0;
        if (together) {
            int all_plain = 1;
            for (int k = 0; k < 4; k++) {
                rows_out[k] = job->out + row[k] * job->out_stride;
                xs0[k] = xs[k];
                pos0[k] = pos[k];
                plain[k] = job->distinct[row[k]] != 0;
                if (!plain[k]) {
                    const int64_t *counts = job->counts + row[k] * job->counts_stride;
                    all_plain = 0;
                    leaf_tree(counts, n, job->levels, lefts[k], job->sums);
                    for (int64_t c = 0; c < n; c++)
                        cnts[k][c] = counts[c];
                }
            }
            if (rows4(xs, pos, ends, job->words, m, job->recip, rows_out, plain, lefts, cnts,
                      job->levels)) {
                if (all_plain) {
                    lehmer4(rows_out, m, job->base, job->nbase, job->mlevels, job->tree);
                } else {
                    for (int k = 0; k < 4; k++)
                        if (plain[k])
                            lehmer_row(rows_out[k], m, job->base, job->nbase, job->mlevels,
                                       job->tree);
                }
                for (int k = 0; k < 4; k++)
                    row[k]++;
                continue;
            }
            for (int k = 0; k < 4; k++) { /* a lane ran out of words: this row lane by lane */
                xs[k] = xs0[k];
                pos[k] = pos0[k];
            }
        }
        more = 0;
        for (int k = 0; k < 4; k++) {
            int64_t lane = lane0 + k;
            if (st[k] == PC_MS_OK && row[k] < bounds[lane + 1]) {
                st[k] = decode_lane(job, &xs[k], &pos[k], starts[lane + 1], row[k], row[k] + 1, 0);
                row[k]++;
                more = 1;
            }
        }
    }
    for (int k = 0; k < 4; k++) {
        int64_t lane = lane0 + k;
        if (st[k] == PC_MS_OK && final && (pos[k] != starts[lane + 1] || xs[k] != PC_STATE_LOW))
            st[k] = PC_MS_INCONSISTENT;
        x[lane] = xs[k];
        status[lane] = st[k];
        used[lane] = pos[k] - starts[lane];
    }
}

int pc_ms_decode_rows(int64_t *x, int64_t lanes, const int64_t *starts, const uint32_t *words,
                      const int64_t *counts, int64_t counts_stride, int64_t n,
                      const uint8_t *distinct, const int64_t *bounds, int64_t m, int final,
                      const uint64_t *recip, int64_t *out, int64_t out_stride,
                      int64_t *status, int64_t *used) {
    if (m < 1 || m > PC_MS_MAX_ROW)
        return PC_MS_FALLBACK;
    rows_job job;
    job.words = words;
    job.counts = counts;
    job.counts_stride = counts_stride;
    job.n = n;
    job.levels = pc_ms_levels(n);
    job.top = (int64_t)1 << job.levels;
    job.m = m;
    job.out = out;
    job.out_stride = out_stride;
    job.distinct = distinct;
    job.recip = recip;
    job.nrecip = recip ? PC_MS_RECIP_SIZE : 0;
    job.mlevels = pc_ms_levels(m);
    job.nbase = (int64_t)1 << job.mlevels;
    int32_t *base = pc_alloc(job.nbase, 1, sizeof *base);
    job.base = base;
    job.left = pc_alloc(4, job.top, sizeof *job.left);
    job.cnt = pc_alloc(4, n, sizeof *job.cnt);
    job.sums = pc_alloc(2, job.top, sizeof *job.sums);
    job.tree = pc_alloc(4, job.nbase, sizeof *job.tree);
    int result = PC_MS_NO_MEMORY;
    if (base && job.left && job.cnt && job.sums && job.tree) {
        pc_ms_left_counts(m, base);
        int64_t grouped = 0;
        if (PC_HAS_U128 && m < job.nrecip && starts[lanes] > 0)
            grouped = lanes - lanes % 4;
        for (int64_t lane = 0; lane < grouped; lane += 4)
            decode_four_lanes(&job, x, starts, bounds, lane, final, status, used);
        for (int64_t lane = grouped; lane < lanes; lane++) {
            int64_t pos = starts[lane];
            status[lane] = decode_lane(&job, &x[lane], &pos, starts[lane + 1], bounds[lane],
                                       bounds[lane + 1], final);
            used[lane] = pos - starts[lane];
        }
        result = PC_MS_OK;
    }
    free(base);
    free(job.left);
    free(job.cnt);
    free(job.sums);
    free(job.tree);
    return result;
}

/* ---------------------------------------------------------------- groups of lanes */

int pc_ms_decode_mixed(int64_t *x, int64_t lanes, const uint32_t *words, int64_t n_words,
                       const int64_t *counts, int64_t counts_stride, int64_t rows, int64_t n,
                       const uint8_t *distinct, int64_t m, int final, const uint64_t *recip,
                       int64_t *code, int64_t *pos_out) {
    if (m < 1 || m > PC_MS_MAX_ROW)
        return PC_MS_FALLBACK;
    const int levels = pc_ms_levels(n);
    const int64_t top = (int64_t)1 << levels, nrecip = recip ? PC_MS_RECIP_SIZE : 0;
    const int64_t groups = rows / lanes + (rows % lanes != 0);
    int64_t *left = pc_alloc(lanes, top, sizeof *left);
    int64_t *cnt = pc_alloc(lanes, n, sizeof *cnt);
    int64_t *sums = pc_alloc(2, top, sizeof *sums);
    int64_t pos = 0;
    int early = 0, status = PC_MS_NO_MEMORY;
    if (left && cnt && sums) {
        status = PC_MS_OK;
        for (int64_t g = 0; g < groups; g++) {
            const int64_t r0 = g * lanes, live = pc_min(lanes, rows - r0);
            for (int64_t lane = 0; lane < live; lane++) {
                if (distinct[r0 + lane])
                    continue;
                const int64_t *row = counts + (r0 + lane) * counts_stride;
                leaf_tree(row, n, levels, &left[lane * top], sums);
                for (int64_t c = 0; c < n; c++)
                    cnt[lane * n + c] = row[c];
            }
            for (int64_t j = 0; j < m; j++) {
                const int64_t total = m - j;
                int64_t *o = code + (g * m + j) * lanes;
                early = 0;
                for (int64_t lane = 0; lane < lanes; lane++) {
                    int64_t xl = x[lane];
                    if (lane < live) {
                        int64_t s = xl & PC_LOW_MASK, cc = pc_scaled(s, total), lo, fr, sym;
                        if (distinct[r0 + lane]) {
                            sym = cc;
                            lo = pc_div(pc_shl(cc, PC_PROB_BITS), total, recip, nrecip);
                            fr = pc_sub(pc_div(pc_shl(cc + 1, PC_PROB_BITS), total, recip, nrecip),
                                        lo);
                        } else {
                            sym = multiset_step(cc, total, &left[lane * top], &cnt[lane * n],
                                                levels, &lo, &fr, recip, nrecip);
                        }
                        o[lane] = sym;
                        xl = pc_next(xl, s, lo, fr);
                    }
                    xl = refill(xl, words, n_words, &pos, &early);
                    x[lane] = xl;
                }
                if (early) {
                    status = PC_MS_ENDS_EARLY;
                    break;
                }
            }
            if (status != PC_MS_OK)
                break;
        }
        if (status == PC_MS_OK)
            status = end_status(x, lanes, pos, n_words, final);
    }
    *pos_out = pos;
    free(left);
    free(cnt);
    free(sums);
    return status;
}

int pc_ms_lehmer_to_classes(const int64_t *code, int64_t rows, int64_t m, int64_t lanes,
                            const uint8_t *distinct, int64_t *out, int64_t out_stride) {
    const int levels = pc_ms_levels(m);
    const int64_t nbase = (int64_t)1 << levels;
    int32_t *base = pc_alloc(nbase, 1, sizeof *base);
    int32_t *trees = pc_alloc(4, nbase, sizeof *trees);
    int status = PC_MS_NO_MEMORY;
    if (base && trees) {
        int64_t *batch[4];
        int queued = 0;
        pc_ms_left_counts(m, base);
        for (int64_t r = 0; r < rows; r++) {
            int64_t *o = out + r * out_stride;
            const int64_t *from = code + (r / lanes) * m * lanes + r % lanes;
            for (int64_t j = 0; j < m; j++)
                o[j] = from[j * lanes];
            if (distinct[r]) { /* rows of distinct values four at a time (lehmer4) */
                batch[queued++] = o;
                if (queued == 4) {
                    lehmer4(batch, m, base, nbase, levels, trees);
                    queued = 0;
                }
            }
        }
        for (int q = 0; q < queued; q++)
            lehmer_row(batch[q], m, base, nbase, levels, trees);
        status = PC_MS_OK;
    }
    free(base);
    free(trees);
    return status;
}

/* pc_ms_decode over trees of left-subtree counts, one per lane, which take the value
 * on the way down the search. */
static int decode_general(int64_t *x, int64_t lanes, const uint32_t *words, int64_t n_words,
                          const int64_t *counts, int64_t counts_stride, int64_t rows,
                          int64_t n, const int64_t *totals, int64_t totals_stride, int64_t m,
                          int final, const uint64_t *recip, int64_t nrecip, int64_t *out,
                          int64_t out_stride, int64_t *pos_out) {
    const int levels = pc_ms_levels(n);
    const int64_t span = (int64_t)1 << levels;
    const int64_t groups = rows / lanes + (rows % lanes != 0);
    int64_t *left = pc_alloc(lanes, span, sizeof *left);
    int64_t *sums = pc_alloc(2, span, sizeof *sums);
    int64_t *cnt = pc_alloc(lanes, n, sizeof *cnt);
    int64_t *have = pc_alloc(lanes, 1, sizeof *have);
    uint8_t *active = pc_alloc(lanes, 1, sizeof *active);
    int64_t pos = 0, ss[4], tt[4], ats[4], bel[4];
    int early = 0, bad = 0, status = PC_MS_NO_MEMORY;
    if (left && sums && cnt && have && active) {
        status = PC_MS_OK;
        for (int64_t g = 0; g < groups; g++) {
            const int64_t r0 = g * lanes, live = pc_min(lanes, rows - r0);
            for (int64_t lane = 0; lane < live; lane++) {
                const int64_t *row = counts + (r0 + lane) * counts_stride;
                have[lane] = 0;
                for (int64_t c = 0; c < n; c++) {
                    cnt[lane * n + c] = row[c];
                    have[lane] += row[c];
                }
                leaf_tree(row, n, levels, &left[lane * span], sums);
                active[lane] = have[lane] > 0;
            }
            for (int64_t j = 0; j < m; j++) {
                early = 0;
                /* lanes four at a time: their descents first, so that they overlap; then
                 * each lane's interval, state and refill in lane order, as the shared
                 * word stream requires */
                for (int64_t l0 = 0; l0 < lanes; l0 += 4) {
                    const int64_t blk = pc_min(4, lanes - l0);
                    for (int64_t q = 0; q < blk; q++) {
                        const int64_t lane = l0 + q;
                        if (lane >= live)
                            continue;
                        ss[q] = x[lane] & PC_LOW_MASK;
                        tt[q] = totals ? totals[(r0 + lane) * totals_stride + j] : m - j;
                        const int64_t cc = pc_scaled(ss[q], tt[q]);
                        if (cc >= have[lane]) {
                            /* at or past the remaining total (an inactive lane, or
                             * damage): the search ends on the last class. Its tree needs
                             * no update then: the last class's left-subtree counts only
                             * steer between it and empty padding, which a state below
                             * the remaining total never reaches. */
                            ats[q] = n - 1;
                            bel[q] = have[lane];
                        } else if (cc < 0) {
                            /* a scaled state that wrapped around (a total past 2**32):
                             * the search ends on the first class, as the reference's */
                            int64_t *lt = &left[lane * span], node = 1;
                            for (int d = 0; d < levels; d++) {
                                lt[node] -= 1;
                                node = 2 * node;
                            }
                            ats[q] = 0;
                            bel[q] = 0;
                        } else {
                            ats[q] = descend(&left[lane * span], levels, cc, &bel[q]);
                        }
                    }
                    for (int64_t q = 0; q < blk; q++) {
                        const int64_t lane = l0 + q;
                        int64_t xl = x[lane];
                        if (lane < live) {
                            const int64_t at = ats[q];
                            out[(r0 + lane) * out_stride + j] = at;
                            if (active[lane]) {
                                xl = state_after(xl, ss[q], bel[q], cnt[lane * n + at], tt[q],
                                                 recip, nrecip, &bad);
                                if (bad) {
                                    status = PC_MS_INCONSISTENT;
                                    break;
                                }
                                cnt[lane * n + at] -= 1;
                                have[lane] -= 1;
                            }
                        }
                        xl = refill(xl, words, n_words, &pos, &early);
                        x[lane] = xl;
                    }
                    if (status != PC_MS_OK)
                        break;
                }
                if (status != PC_MS_OK)
                    break;
                if (early) {
                    status = PC_MS_ENDS_EARLY;
                    break;
                }
            }
            if (status != PC_MS_OK)
                break;
        }
        if (status == PC_MS_OK)
            status = end_status(x, lanes, pos, n_words, final);
    }
    *pos_out = pos;
    free(left);
    free(sums);
    free(cnt);
    free(have);
    free(active);
    return status;
}

/* pc_ms_decode for bucket-major rows (totals: the remaining count of the current
 * bucket). A bucket's classes are the ones after those of the buckets before it, all
 * used up by then, so each bucket gets a tree of its own classes: a descent of
 * log2(its classes) levels that stays in the L1 cache, where one tree over the row
 * takes log2(row) levels. Classes and statuses are the reference's; totals that do not
 * fit that structure (a bucket that ends before its classes are used up, or whose
 * classes do not sum to its total) return PC_MS_FALLBACK. */
static int decode_refinement(int64_t *x, int64_t lanes, const uint32_t *words, int64_t n_words,
                             const int64_t *counts, int64_t counts_stride, int64_t rows,
                             int64_t n, const int64_t *totals, int64_t totals_stride,
                             int64_t m, int final, const uint64_t *recip, int64_t nrecip,
                             int64_t *out, int64_t out_stride, int64_t *pos_out) {
    const int64_t span = (int64_t)1 << pc_ms_levels(n);
    const int64_t groups = rows / lanes + (rows % lanes != 0);
    int64_t *left = pc_alloc(lanes, span, sizeof *left);
    int64_t *sums = pc_alloc(2, span, sizeof *sums);
    int64_t *cnt = pc_alloc(lanes, n, sizeof *cnt);
    /* per lane: first class of its bucket, levels of the bucket's tree, last total */
    int64_t *first = pc_alloc(lanes, 1, sizeof *first);
    int *depth = pc_alloc(lanes, 1, sizeof *depth);
    int64_t *last = pc_alloc(lanes, 1, sizeof *last);
    int64_t pos = 0, ss[4], tt[4], ats[4], bel[4];
    int early = 0, bad = 0, status = PC_MS_NO_MEMORY;
    if (left && sums && cnt && first && depth && last) {
        status = PC_MS_OK;
        for (int64_t lane = 0; lane < lanes; lane++) {
            first[lane] = 0;
            depth[lane] = 0;
            last[lane] = 0;
        }
        for (int64_t g = 0; g < groups; g++) {
            const int64_t r0 = g * lanes, live = pc_min(lanes, rows - r0);
            for (int64_t lane = 0; lane < live; lane++) {
                const int64_t *row = counts + (r0 + lane) * counts_stride;
                for (int64_t c = 0; c < n; c++)
                    cnt[lane * n + c] = row[c];
                first[lane] = 0;
                last[lane] = 0;
            }
            for (int64_t j = 0; j < m; j++) {
                early = 0;
                for (int64_t l0 = 0; l0 < lanes; l0 += 4) {
                    const int64_t blk = pc_min(4, lanes - l0);
                    for (int64_t q = 0; q < blk; q++) {
                        const int64_t lane = l0 + q;
                        if (lane >= live)
                            continue;
                        const int64_t total = totals[(r0 + lane) * totals_stride + j];
                        int64_t *lc = &cnt[lane * n];
                        if (j == 0 || total != last[lane] - 1) { /* a bucket begins */
                            if (j != 0 && last[lane] != 1) {
                                status = PC_MS_FALLBACK; /* the bucket before is not used up */
                                break;
                            }
                            int64_t c0 = first[lane], got = 0, nb = 0;
                            while (c0 < n - 1 && lc[c0] == 0)
                                c0++;
                            while (c0 + nb < n && got < total) {
                                got += lc[c0 + nb];
                                nb++;
                            }
                            if (got != total) {
                                status = PC_MS_FALLBACK; /* classes do not fill the bucket */
                                break;
                            }
                            first[lane] = c0;
                            depth[lane] = pc_ms_levels(nb);
                            leaf_tree(&lc[c0], nb, depth[lane], &left[lane * span], sums);
                        }
                        last[lane] = total;
                        ss[q] = x[lane] & PC_LOW_MASK;
                        tt[q] = total; /* at least 1: the caller checks */
                        const int64_t cc = pc_scaled(ss[q], total);
                        ats[q] = first[lane] +
                                 descend(&left[lane * span], depth[lane], cc, &bel[q]);
                    }
                    if (status != PC_MS_OK)
                        break;
                    for (int64_t q = 0; q < blk; q++) {
                        const int64_t lane = l0 + q;
                        int64_t xl = x[lane];
                        if (lane < live) {
                            const int64_t at = ats[q];
                            out[(r0 + lane) * out_stride + j] = at;
                            xl = state_after(xl, ss[q], bel[q], cnt[lane * n + at], tt[q], recip,
                                             nrecip, &bad);
                            if (bad) {
                                status = PC_MS_INCONSISTENT;
                                break;
                            }
                            cnt[lane * n + at] -= 1;
                        }
                        xl = refill(xl, words, n_words, &pos, &early);
                        x[lane] = xl;
                    }
                    if (status != PC_MS_OK)
                        break;
                }
                if (status != PC_MS_OK)
                    break;
                if (early) {
                    status = PC_MS_ENDS_EARLY;
                    break;
                }
            }
            if (status != PC_MS_OK)
                break;
        }
        if (status == PC_MS_OK)
            status = end_status(x, lanes, pos, n_words, final);
    }
    *pos_out = pos;
    free(left);
    free(sums);
    free(cnt);
    free(first);
    free(depth);
    free(last);
    return status;
}

int pc_ms_decode(int64_t *x, int64_t lanes, const uint32_t *words, int64_t n_words,
                 const int64_t *counts, int64_t counts_stride, int64_t rows, int64_t n,
                 const int64_t *totals, int64_t totals_stride, int64_t m, int final,
                 const uint64_t *recip, int64_t *out, int64_t out_stride, int64_t *pos) {
    const int64_t nrecip = recip ? PC_MS_RECIP_SIZE : 0;
    if (totals) {
        int64_t *saved = pc_alloc(lanes, 1, sizeof *saved);
        if (saved == NULL)
            return PC_MS_NO_MEMORY;
        memcpy(saved, x, (size_t)lanes * sizeof *saved);
        int status = decode_refinement(x, lanes, words, n_words, counts, counts_stride, rows, n,
                                       totals, totals_stride, m, final, recip, nrecip, out,
                                       out_stride, pos);
        if (status != PC_MS_FALLBACK) {
            free(saved);
            return status;
        }
        /* totals that are not a bucket-major row's: the general search */
        memcpy(x, saved, (size_t)lanes * sizeof *saved);
        free(saved);
    }
    return decode_general(x, lanes, words, n_words, counts, counts_stride, rows, n, totals,
                          totals_stride, m, final, recip, nrecip, out, out_stride, pos);
}

/* ---------------------------------------------------------------- context model */

/* sum of a[i] * b[i] for i < n. */
static inline int64_t dot(const int64_t *restrict a, const int64_t *restrict b, int64_t n) {
    int64_t acc = 0;
    for (int64_t i = 0; i < n; i++)
        acc += a[i] * b[i];
    return acc;
}

/* a[i] -= x[i] and b[i] -= y[i] for i < n (totals of at most 2**31: 32 bits each, four
 * to a 128-bit register). */
static inline void sub_pair(uint32_t *restrict a, const uint32_t *restrict xs,
                            uint32_t *restrict b, const uint32_t *restrict ys, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        a[i] -= xs[i];
        b[i] -= ys[i];
    }
}

/* Each lane keeps, for every context i, the total T_i and the part L_i below bucket i
 * of its weighted remaining counts, so a step reads them instead of summing all
 * buckets, and a decoded bucket takes its weights off every T_i and L_i. */
int pc_ms_decode_ctx(int64_t *x, int64_t lanes, const uint32_t *words, int64_t n_words,
                     const int64_t *ctx, int64_t ctx_stride, const int64_t *counts,
                     int64_t counts_stride, int64_t rows, int64_t k, int64_t m,
                     const int64_t *weights, int final, int64_t *out, int64_t out_stride,
                     int64_t *pos_out) {
    const int64_t groups = rows / lanes + (rows % lanes != 0);
    /* T_i and L_i pay for their k * k start per row when rows are long enough */
    const int incremental = 4 * k <= m;
    const int64_t *w = weights;
    int64_t *rem = pc_alloc(lanes, k, sizeof *rem);
    /* T_i, L_i and the weights in 32 bits (the weight bound keeps T_i within 2**31) */
    uint32_t *tot = pc_alloc(lanes, k, sizeof *tot);
    uint32_t *low = pc_alloc(lanes, k, sizeof *low);
    /* wrev[k - 1 - t + i] = weights[t - i + k - 1]: bucket t's weight under context i */
    uint32_t *wrev = pc_alloc(2 * k - 1, 1, sizeof *wrev);
    /* wabove[t * k + i]: the same weight where i > t (L_i loses it), else 0 */
    uint32_t *wabove = pc_alloc(incremental ? k : 1, incremental ? k : 1, sizeof *wabove);
    uint8_t *active = pc_alloc(lanes, 1, sizeof *active);
    int64_t pos = 0;
    int early = 0, status = PC_MS_NO_MEMORY;
    if (rem && tot && low && wrev && wabove && active) {
        status = PC_MS_OK;
        for (int64_t i = 0; i < 2 * k - 1; i++)
            wrev[i] = (uint32_t)w[2 * k - 2 - i];
        if (incremental) {
            for (int64_t t = 0; t < k; t++)
                for (int64_t i = 0; i < k; i++)
                    wabove[t * k + i] = i > t ? wrev[k - 1 - t + i] : 0;
        }
        for (int64_t g = 0; g < groups; g++) {
            const int64_t r0 = g * lanes, live = pc_min(lanes, rows - r0);
            for (int64_t lane = 0; lane < live; lane++) {
                int64_t *rl = rem + lane * k, have = 0;
                uint32_t *tl = tot + lane * k, *ll = low + lane * k;
                const int64_t *row = counts + (r0 + lane) * counts_stride;
                for (int64_t b = 0; b < k; b++) {
                    rl[b] = row[b];
                    have += rl[b];
                }
                active[lane] = have > 0;
                for (int64_t i = 0; i < (incremental ? k : 0); i++) {
                    int64_t run = dot(rl, w + (k - 1 - i), i);
                    ll[i] = (uint32_t)run;
                    tl[i] = (uint32_t)(run + dot(rl + i, w + (k - 1), k - i));
                }
            }
            for (int64_t j = 0; j < m; j++) {
                early = 0;
                for (int64_t lane = 0; lane < lanes; lane++) {
                    int64_t xl = x[lane];
                    if (lane < live) {
                        const int64_t r = r0 + lane;
                        int64_t *rl = rem + lane * k;
                        const int64_t s = xl & PC_LOW_MASK, hint = ctx[r * ctx_stride + j];
                        const int64_t off = k - 1 - hint;
                        int64_t acc, run, t, lo_c, hi_c;
                        if (incremental) {
                            acc = (int64_t)tot[lane * k + hint];
                            run = (int64_t)low[lane * k + hint];
                        } else {
                            run = dot(rl, w + off, hint);
                            acc = run + dot(rl + hint, w + off + hint, k - hint);
                        }
                        const int64_t total = acc > 1 ? acc : 1;
                        const int64_t cc = pc_scaled(s, total);
                        if (run <= cc) {
                            int64_t part;
                            t = hint;
                            part = rl[t] * w[off + t];
                            while (run + part <= cc) {
                                run += part;
                                t++;
                                if (t == k)
                                    break;
                                part = rl[t] * w[off + t];
                            }
                            if (t == k) {
                                t = k - 1;
                                lo_c = acc - rl[t] * w[off + t];
                                hi_c = acc;
                            } else {
                                lo_c = run;
                                hi_c = run + part;
                            }
                        } else {
                            t = hint - 1;
                            hi_c = run;
                            lo_c = hi_c - rl[t] * w[off + t];
                            while (lo_c > cc) {
                                t--;
                                hi_c = lo_c;
                                lo_c = hi_c - rl[t] * w[off + t];
                            }
                        }
                        out[r * out_stride + j] = t;
                        if (active[lane]) {
                            const int64_t lo = (lo_c << PC_PROB_BITS) / total;
                            const int64_t fr = (hi_c << PC_PROB_BITS) / total - lo;
                            if (fr <= 0) {
                                status = PC_MS_INCONSISTENT;
                                break;
                            }
                            rl[t] -= 1;
                            if (incremental)
                                sub_pair(tot + lane * k, wrev + (k - 1 - t), low + lane * k,
                                         wabove + t * k, k);
                            xl = pc_next(xl, s, lo, fr);
                        }
                    }
                    xl = refill(xl, words, n_words, &pos, &early);
                    x[lane] = xl;
                }
                if (status != PC_MS_OK)
                    break;
                if (early) {
                    status = PC_MS_ENDS_EARLY;
                    break;
                }
            }
            if (status != PC_MS_OK)
                break;
        }
        if (status == PC_MS_OK)
            status = end_status(x, lanes, pos, n_words, final);
    }
    *pos_out = pos;
    free(rem);
    free(tot);
    free(low);
    free(wrev);
    free(wabove);
    free(active);
    return status;
}

/* ---------------------------------------------------------------- buckets */

void pc_ms_count_classes(const int64_t *packed, int64_t packed_stride, int64_t rows,
                         int64_t m, int64_t *most, int64_t *fewest) {
    int64_t n = 0, few = m;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t *row = packed + r * packed_stride;
        int64_t nc = m ? 1 : 0;
        for (int64_t p = 1; p < m; p++)
            if (pc_sar(row[p], 32) != pc_sar(row[p - 1], 32))
                nc++;
        if (nc > n)
            n = nc;
        if (nc < few)
            few = nc;
    }
    *most = n;
    *fewest = few;
}

int pc_ms_init_buckets(const int64_t *packed, int64_t packed_stride, int64_t rows, int64_t m,
                       int64_t k, int64_t *counts, int64_t counts_stride, int64_t n,
                       int64_t *first, int64_t first_stride, int64_t *ctx, int64_t ctx_stride,
                       int64_t *per_bucket, int64_t per_bucket_stride) {
    if (k < 1 || (m > 0 && k > INT64_MAX / m))
        return PC_MS_FALLBACK;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t *row = packed + r * packed_stride;
        int64_t *cr = counts + r * counts_stride, *fr = first + r * first_stride;
        int64_t *xr = ctx + r * ctx_stride, *br = per_bucket + r * per_bucket_stride;
        for (int64_t c = 0; c < n; c++) {
            cr[c] = 0;
            fr[c] = 0;
        }
        for (int64_t b = 0; b < k; b++)
            br[b] = 0;
        int64_t c = -1, b = 0;
        for (int64_t p = 0; p < m; p++) {
            if (p == 0 || pc_sar(row[p], 32) != pc_sar(row[p - 1], 32)) {
                c++;
                fr[c] = p;
                b = p * k / m;
            }
            cr[c] += 1;
            const int64_t at = row[p] & PC_WORD_MASK;
            if (at >= m)
                return PC_MS_FALLBACK;
            xr[at] = b;
            br[b] += 1;
        }
    }
    return PC_MS_OK;
}

/* The body of pc_ms_place_refined for words of type T. */
#define PC_PLACE_REFINED(NAME, T)                                                          \
    static int NAME(const int64_t *seq, int64_t seq_stride, const int64_t *sym,            \
                    int64_t sym_stride, int64_t rows, int64_t m, const T *values,          \
                    int64_t values_stride, int64_t n, int64_t k, T *out, int64_t out_stride, \
                    int64_t *cursor) {                                                     \
        for (int64_t r = 0; r < rows; r++) {                                               \
            const int64_t *sr = sym + r * sym_stride, *qr = seq + r * seq_stride;          \
            const T *vr = values + r * values_stride;                                      \
            T *o = out + r * out_stride;                                                   \
            for (int64_t b = 0; b < k; b++)                                                \
                cursor[b] = 0;                                                             \
            for (int64_t p = 0; p < m; p++) {                                              \
                const int64_t b = sr[p];                                                   \
                if (b < 0 || b >= k)                                                       \
                    return PC_MS_FALLBACK;                                                 \
                cursor[b] += 1;                                                            \
            }                                                                              \
            int64_t acc = 0;                                                               \
            for (int64_t b = 0; b < k; b++) {                                              \
                const int64_t c = cursor[b];                                               \
                cursor[b] = acc;                                                           \
                acc += c;                                                                  \
            }                                                                              \
            for (int64_t p = 0; p < m; p++) {                                              \
                const int64_t c = qr[cursor[sr[p]]];                                       \
                cursor[sr[p]] += 1;                                                        \
                if (c < 0 || c >= n)                                                       \
                    return PC_MS_FALLBACK;                                                 \
                o[p] = vr[c];                                                              \
            }                                                                              \
        }                                                                                  \
        return PC_MS_OK;                                                                   \
    }
PC_PLACE_REFINED(place_refined16, uint16_t)
PC_PLACE_REFINED(place_refined32, uint32_t)
PC_PLACE_REFINED(place_refined64, uint64_t)
#undef PC_PLACE_REFINED

int pc_ms_place_refined(const int64_t *seq, int64_t seq_stride, const int64_t *sym,
                        int64_t sym_stride, int64_t rows, int64_t m, const void *values,
                        int64_t values_stride, int64_t n, int width, int64_t k, void *out,
                        int64_t out_stride) {
    if (width != 2 && width != 4 && width != 8)
        return PC_MS_FALLBACK;
    int64_t *cursor = pc_alloc(k, 1, sizeof *cursor);
    if (cursor == NULL)
        return PC_MS_NO_MEMORY;
    int status;
    if (width == 2)
        status = place_refined16(seq, seq_stride, sym, sym_stride, rows, m, values,
                                 values_stride, n, k, out, out_stride, cursor);
    else if (width == 4)
        status = place_refined32(seq, seq_stride, sym, sym_stride, rows, m, values,
                                 values_stride, n, k, out, out_stride, cursor);
    else
        status = place_refined64(seq, seq_stride, sym, sym_stride, rows, m, values,
                                 values_stride, n, k, out, out_stride, cursor);
    free(cursor);
    return status;
}

/* ---------------------------------------------------------------- encoders */

/* (start, freq) of every step of row r (its m classes cls, counts `counts`, or m
 * distinct values where plain); 0 if the row does not match its counts or a step's
 * interval is empty. Scratch: tree and left of 2 * 2**levels(max(n, m)) each; base:
 * pc_ms_left_counts(m), nbase entries. */
static int row_intervals(const int64_t *cls, const int64_t *counts, int64_t n, int64_t m,
                         int plain, int64_t *start, int64_t *freq, int64_t *tree,
                         int64_t *left, const int32_t *base, int64_t nbase) {
    const int levels = pc_ms_levels(plain ? m : n);
    if (plain) {
        for (int64_t c = 0; c < nbase; c++)
            tree[c] = base[c];
        for (int64_t c = 0; c < m; c++)
            left[c] = 0;
    } else {
        leaf_tree(counts, n, levels, tree, left);
        for (int64_t c = 0; c < n; c++)
            left[c] = counts[c];
    }
    for (int64_t j = 0; j < m; j++) {
        const int64_t v = cls[j], total = m - j;
        int64_t below = 0, node = 1, f;
        for (int d = levels - 1; d >= 0; d--) {
            const int64_t lc = tree[node];
            if ((v >> d) & 1) {
                below += lc;
                node = 2 * node + 1;
            } else {
                tree[node] = lc - 1;
                node = 2 * node;
            }
        }
        if (plain) {
            if (left[v])
                return 0;
            left[v] = 1;
            f = 1;
        } else {
            f = left[v];
            if (f <= 0)
                return 0;
            left[v] = f - 1;
        }
        start[j] = pc_shl(below, PC_PROB_BITS) / total;
        freq[j] = pc_sub(pc_shl(below + f, PC_PROB_BITS) / total, start[j]);
        if (freq[j] <= 0)
            return 0;
    }
    return 1;
}

int pc_ms_encode_rows(const int64_t *cls, int64_t cls_stride, const int64_t *counts,
                      int64_t counts_stride, int64_t n, const uint8_t *distinct,
                      const int64_t *bounds, int64_t lanes, int64_t m, int64_t *x,
                      int64_t *seg, uint32_t *buf) {
    const int64_t top = (int64_t)1 << pc_ms_levels(n > m ? n : m);
    const int64_t nbase = (int64_t)1 << pc_ms_levels(m);
    int64_t *start = pc_alloc(m, 1, sizeof *start);
    int64_t *freq = pc_alloc(m, 1, sizeof *freq);
    int64_t *tree = pc_alloc(2, top, sizeof *tree);
    int64_t *left = pc_alloc(2, top, sizeof *left);
    int32_t *base = pc_alloc(nbase, 1, sizeof *base);
    int status = PC_MS_NO_MEMORY;
    if (start && freq && tree && left && base) {
        pc_ms_left_counts(m, base);
        status = PC_MS_OK;
        for (int64_t lane = 0; lane < lanes && status == PC_MS_OK; lane++) {
            int64_t xl = PC_STATE_LOW, wpos = bounds[lane + 1] * m;
            for (int64_t r = bounds[lane + 1] - 1; r >= bounds[lane]; r--) {
                if (!row_intervals(cls + r * cls_stride, counts + r * counts_stride, n, m,
                                   distinct[r] != 0, start, freq, tree, left, base, nbase)) {
                    status = PC_MS_FALLBACK;
                    break;
                }
                for (int64_t j = m - 1; j >= 0; j--) {
                    const int64_t fr = freq[j];
                    if (pc_sar(xl, 32) >= fr) {
                        buf[--wpos] = (uint32_t)(xl & PC_WORD_MASK);
                        xl = pc_sar(xl, 32);
                    }
                    xl = pc_add(pc_add(pc_shl(xl / fr, PC_PROB_BITS), xl % fr), start[j]);
                }
            }
            x[lane] = xl;
            seg[lane] = wpos;
        }
    }
    free(start);
    free(freq);
    free(tree);
    free(left);
    free(base);
    return status;
}

/* A growing buffer of words, in encoding order. */
typedef struct {
    uint32_t *w;
    int64_t n, cap;
} word_buf;

/* Encodes the step of interval [lo, lo + fr) (fr >= 1) into state *x, pushing a word
 * to the buffer (grown by doubling) where the state needs room. */
static inline int emit(int64_t *x, int64_t lo, int64_t fr, word_buf *buf) {
    int64_t xv = *x;
    if (pc_sar(xv, 32) >= fr) {
        if (buf->n == buf->cap) {
            uint32_t *grown = NULL;
            if (buf->cap <= INT64_MAX / 2 && (uint64_t)buf->cap <= SIZE_MAX / 8)
                grown = realloc(buf->w, (size_t)buf->cap * 2 * sizeof *grown);
            if (grown == NULL)
                return PC_MS_NO_MEMORY;
            buf->w = grown;
            buf->cap *= 2;
        }
        buf->w[buf->n++] = (uint32_t)(xv & PC_WORD_MASK);
        xv = pc_sar(xv, 32);
    }
    *x = pc_add(pc_add(pc_shl(xv / fr, PC_PROB_BITS), xv % fr), lo);
    return PC_MS_OK;
}

/* The buffer's words in decoding order (reversed in place) for the caller, or freed
 * where status is not OK. */
static int hand_over(word_buf *buf, int status, uint32_t **words, int64_t *n_words) {
    if (status != PC_MS_OK) {
        free(buf->w);
        *words = NULL;
        *n_words = 0;
        return status;
    }
    for (int64_t i = 0, j = buf->n - 1; i < j; i++, j--) {
        uint32_t t = buf->w[i];
        buf->w[i] = buf->w[j];
        buf->w[j] = t;
    }
    *words = buf->w;
    *n_words = buf->n;
    return status;
}

int pc_ms_encode(const int64_t *cls, int64_t cls_stride, int64_t rows, int64_t m,
                 const int64_t *counts, int64_t counts_stride, int64_t n,
                 const int64_t *totals, int64_t totals_stride, int64_t lanes,
                 int64_t capacity, int64_t *x, uint32_t **words, int64_t *n_words) {
    const int64_t groups = rows / lanes + (rows % lanes != 0);
    word_buf buf;
    buf.n = 0;
    buf.cap = capacity > 16 ? capacity : 16;
    buf.w = pc_alloc(buf.cap, 1, sizeof *buf.w);
    int64_t *tree = pc_alloc(lanes, n + 1, sizeof *tree);
    int64_t *cnt = pc_alloc(lanes, n, sizeof *cnt);
    int status = PC_MS_NO_MEMORY;
    if (buf.w && tree && cnt) {
        status = PC_MS_OK;
        for (int64_t lane = 0; lane < lanes; lane++)
            x[lane] = PC_STATE_LOW;
        for (int64_t g = groups - 1; g >= 0 && status == PC_MS_OK; g--) {
            const int64_t r0 = g * lanes, live = pc_min(lanes, rows - r0);
            for (int64_t lane = 0; lane < live; lane++) {
                for (int64_t c = 0; c <= n; c++)
                    tree[lane * (n + 1) + c] = 0;
                for (int64_t c = 0; c < n; c++)
                    cnt[lane * n + c] = 0;
            }
            for (int64_t j = m - 1; j >= 0 && status == PC_MS_OK; j--) {
                for (int64_t lane = live - 1; lane >= 0; lane--) {
                    const int64_t r = r0 + lane, v = cls[r * cls_stride + j];
                    int64_t *ft = tree + lane * (n + 1), below = 0;
                    cnt[lane * n + v] += 1;
                    for (int64_t i = v + 1; i <= n; i += i & -i)
                        ft[i] += 1;
                    for (int64_t i = v; i > 0; i -= i & -i)
                        below += ft[i];
                    const int64_t total = totals ? totals[r * totals_stride + j] : m - j;
                    if (total <= 0) {
                        status = PC_MS_FALLBACK;
                        break;
                    }
                    const int64_t lo = pc_shl(below, PC_PROB_BITS) / total;
                    const int64_t fr = pc_sub(
                        pc_shl(pc_add(below, cnt[lane * n + v]), PC_PROB_BITS) / total, lo);
                    if (fr <= 0) {
                        status = PC_MS_FALLBACK;
                        break;
                    }
                    status = emit(&x[lane], lo, fr, &buf);
                    if (status != PC_MS_OK)
                        break;
                }
            }
            if (status != PC_MS_OK)
                break;
            for (int64_t lane = 0; lane < live; lane++)
                for (int64_t c = 0; c < n; c++)
                    if (cnt[lane * n + c] != counts[(r0 + lane) * counts_stride + c])
                        status = PC_MS_FALLBACK;
        }
    }
    free(tree);
    free(cnt);
    return hand_over(&buf, status, words, n_words);
}

int pc_ms_encode_ctx(const int64_t *sym, int64_t sym_stride, const int64_t *ctx,
                     int64_t ctx_stride, int64_t rows, int64_t m, const int64_t *counts,
                     int64_t counts_stride, int64_t k, const int64_t *weights, int64_t lanes,
                     int64_t capacity, int64_t *x, uint32_t **words, int64_t *n_words) {
    const int64_t groups = rows / lanes + (rows % lanes != 0);
    word_buf buf;
    buf.n = 0;
    buf.cap = capacity > 16 ? capacity : 16;
    buf.w = pc_alloc(buf.cap, 1, sizeof *buf.w);
    int64_t *rem = pc_alloc(lanes, k, sizeof *rem);
    int status = PC_MS_NO_MEMORY;
    if (buf.w && rem) {
        status = PC_MS_OK;
        for (int64_t lane = 0; lane < lanes; lane++)
            x[lane] = PC_STATE_LOW;
        for (int64_t g = groups - 1; g >= 0 && status == PC_MS_OK; g--) {
            const int64_t r0 = g * lanes, live = pc_min(lanes, rows - r0);
            for (int64_t lane = 0; lane < live; lane++)
                for (int64_t c = 0; c < k; c++)
                    rem[lane * k + c] = 0;
            for (int64_t j = m - 1; j >= 0 && status == PC_MS_OK; j--) {
                for (int64_t lane = live - 1; lane >= 0; lane--) {
                    const int64_t r = r0 + lane, t = sym[r * sym_stride + j];
                    const int64_t off = k - 1 - ctx[r * ctx_stride + j];
                    int64_t *rl = rem + lane * k, below = 0, total = 0;
                    rl[t] += 1;
                    for (int64_t c = 0; c < k; c++) {
                        const int64_t p = pc_mul(rl[c], weights[off + c]);
                        total = pc_add(total, p);
                        if (c < t)
                            below = pc_add(below, p);
                    }
                    if (total <= 0) {
                        status = PC_MS_FALLBACK;
                        break;
                    }
                    const int64_t hi_c = pc_add(below, pc_mul(rl[t], weights[off + t]));
                    const int64_t lo = pc_shl(below, PC_PROB_BITS) / total;
                    const int64_t fr = pc_sub(pc_shl(hi_c, PC_PROB_BITS) / total, lo);
                    if (fr <= 0) {
                        status = PC_MS_FALLBACK;
                        break;
                    }
                    status = emit(&x[lane], lo, fr, &buf);
                    if (status != PC_MS_OK)
                        break;
                }
            }
            if (status != PC_MS_OK)
                break;
            for (int64_t lane = 0; lane < live; lane++)
                for (int64_t c = 0; c < k; c++)
                    if (rem[lane * k + c] != counts[(r0 + lane) * counts_stride + c])
                        status = PC_MS_FALLBACK;
        }
    }
    free(rem);
    return hand_over(&buf, status, words, n_words);
}
