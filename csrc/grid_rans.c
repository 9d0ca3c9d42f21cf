/* Static-table interleaved rANS of the `grid-rans` coding: see grid_rans.h. */
#include "grid_rans.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Start of every symbol's interval in each table (n_tables x n_symbols): the encoder's. */
static uint32_t *cumulative(const uint16_t *freqs, int64_t n_tables, int64_t n_symbols) {
    uint32_t *cum = malloc(sizeof(uint32_t) * (size_t)(n_tables * n_symbols));
    if (cum == NULL)
        return NULL;
    for (int64_t t = 0; t < n_tables; t++) {
        uint32_t acc = 0;
        for (int64_t s = 0; s < n_symbols; s++) {
            cum[t * n_symbols + s] = acc;
            acc += freqs[t * n_symbols + s];
        }
    }
    return cum;
}

static int64_t lane_start(int64_t lane, int64_t rows, int64_t lanes) {
    return lane * rows / lanes;
}

/* One lane of a decode: its state, words, and where it stands in its rows. */
typedef struct {
    uint64_t x;
    const uint32_t *p, *end;
    int64_t r, r_end, j; /* row, end row, position in the row */
    int64_t base, t;     /* offsets in `blk` of the row's first table and the current one */
    int64_t esc;
    int status;
    int extra_escapes;               /* more escapes than outliers (values mode) */
    double step;                     /* the row's step (values mode) */
    const float *next_out, *out_end; /* the lane's outliers not yet placed (values mode) */
} lane_state;

/* The decoder's view of the tables: for each table, a block of PC_BUCKETS entries, the
 * entry of the symbol whose interval holds the first slot of each bucket of
 * PC_BUCKET_SLOTS slots, then one entry per symbol; an entry packs the symbol (bits
 * 0-15), the start of its interval (16-31) and its frequency (32-47). A slot's symbol is
 * its bucket's, or found from it by a short forward scan, with one load per step:
 * a small index that stays in cache however many tables there are. */
#define PC_BUCKET_BITS 5
#define PC_BUCKET_SLOTS ((uint32_t)1 << PC_BUCKET_BITS)
#define PC_BUCKETS (PC_GRID_TABLE_ONE >> PC_BUCKET_BITS)

typedef struct {
    const uint16_t *freqs;   /* the tables as given */
    const uint8_t *ctx_of;   /* each symbol's context */
    int64_t contexts;        /* tables per row group */
    const uint64_t *blk;     /* the tables' blocks */
    const int64_t *next;     /* offset of the table each symbol selects, from a row's first */
    const uint8_t *group;
    int64_t m;               /* symbols per row */
    int64_t escape;          /* the escape symbol */
    uint16_t *out;           /* symbols mode: the symbols */
    float *values;           /* values mode: the float32 values */
    const double *row_steps; /* values mode: each row's step */
    int64_t q_lo;
    int64_t row_base;        /* entries from one row group's tables to the next's */
} grid_model;

static void lane_row(lane_state *s, const grid_model *g) {
    s->j = 0;
    s->base = g->group[s->r] * g->row_base;
    s->t = s->base;
    if (g->row_steps != NULL)
        s->step = g->row_steps[s->r];
}

#if defined(__GNUC__)
#define PC_INLINE static inline __attribute__((always_inline))
#else
#define PC_INLINE static inline
#endif

/* The entry (of `tb`, a table's block) of the symbol whose interval holds `slot`. */
PC_INLINE uint64_t slot_entry(const uint64_t *tb, uint64_t slot) {
    uint64_t e = tb[slot >> PC_BUCKET_BITS];
    while (slot - ((e >> 16) & 0xFFFF) >= (e >> 32))
        e = tb[PC_BUCKETS + (e & 0xFFFF) + 1];
    return e;
}

/* The state after decoding the symbol of entry `e` from state `x` (before a refill). */
PC_INLINE uint64_t state_after(uint64_t e, uint64_t x) {
    return (e >> 32) * (x >> PC_GRID_TABLE_BITS) + (x & (PC_GRID_TABLE_ONE - 1)) -
           ((e >> 16) & 0xFFFF);
}

/* The float32 value of grid index q on a row of step `step` (FORMAT 4.6.3). */
PC_INLINE float grid_value(int64_t q, double step) {
    return (float)((double)q * step);
}

/* Decode one symbol of a lane that has one left; false when its stream ends early. With
 * `values` the symbol's float32 value is written (an escape takes the lane's next
 * outlier), else the symbol. */
PC_INLINE int lane_step(lane_state *s, const grid_model *g, const int values) {
    const uint64_t e = slot_entry(g->blk + s->t, s->x & (PC_GRID_TABLE_ONE - 1));
    const uint16_t sym = (uint16_t)(e & 0xFFFF);
    uint64_t x = state_after(e, s->x);
    if (x < PC_GRID_STATE_LOW) {
        if (s->p == s->end) {
            s->status = PC_GRID_ENDS_EARLY;
            return 0;
        }
        x = (x << 32) | *s->p++;
    }
    s->x = x;
    const int escape = sym == g->escape;
    if (values) {
        float v;
        if (escape) {
            /* past its outliers the lane goes on (its stream may still fail, and that
               error comes first), its escapes flagged as not matching */
            if (s->next_out == s->out_end) {
                s->extra_escapes = 1;
                v = 0.0f;
            } else {
                v = *s->next_out++;
            }
        } else {
            v = grid_value(g->q_lo + sym, s->step);
        }
        g->values[s->r * g->m + s->j] = v;
    } else {
        g->out[s->r * g->m + s->j] = sym;
    }
    s->esc += escape;
    s->t = s->base + g->next[sym];
    if (++s->j == g->m && ++s->r < s->r_end)
        lane_row(s, g);
    return 1;
}

static int64_t lane_left(const lane_state *s, int64_t m) {
    return s->status ? 0 : (s->r_end - s->r) * m - s->j;
}

/* `run` symbols of each of four lanes, none of which ends a row or needs a word past
 * its segment in them (the caller checks both): the lanes' states in registers, no
 * bounds checks. */
PC_INLINE void run4(lane_state *s, const grid_model *g, int64_t run, const int values) {
    const uint64_t *blk = g->blk;
    const int64_t *next = g->next;
    const int64_t escape = g->escape;
#define PC_LANE_LOCALS(k)                                                                  \
    uint64_t x##k = s[k].x;                                                                \
    const uint32_t *p##k = s[k].p;                                                         \
    int64_t t##k = s[k].t, esc##k = s[k].esc;                                              \
    const int64_t base##k = s[k].base;                                                     \
    const double step##k = s[k].step;                                                      \
    const float *o##k = s[k].next_out;                                                     \
    float *v##k = values ? g->values + s[k].r * g->m + s[k].j : NULL;                      \
    uint16_t *u##k = values ? NULL : g->out + s[k].r * g->m + s[k].j;
#define PC_LANE_STEP(k)                                                                    \
    {                                                                                      \
        const uint64_t e = slot_entry(blk + t##k, x##k & (PC_GRID_TABLE_ONE - 1));         \
        const int64_t sym = (int64_t)(e & 0xFFFF);                                         \
        x##k = state_after(e, x##k);                                                       \
        if (x##k < PC_GRID_STATE_LOW)                                                      \
            x##k = (x##k << 32) | *p##k++;                                                 \
        t##k = base##k + next[sym];                                                        \
        if (values) {                                                                      \
            if (sym == escape) {                                                           \
                esc##k++;                                                                  \
                v##k[i] = o##k != s[k].out_end ? *o##k++ : (s[k].extra_escapes = 1, 0.0f); \
            } else {                                                                       \
                v##k[i] = grid_value(g->q_lo + sym, step##k);                              \
            }                                                                              \
        } else {                                                                           \
            esc##k += sym == escape;                                                       \
            u##k[i] = (uint16_t)sym;                                                       \
        }                                                                                  \
    }
#define PC_LANE_STORE(k)                                                                   \
    s[k].x = x##k;                                                                         \
    s[k].p = p##k;                                                                         \
    s[k].t = t##k;                                                                         \
    s[k].esc = esc##k;                                                                     \
    s[k].next_out = o##k;                                                                  \
    s[k].j += run;                                                                         \
    if (s[k].j == g->m && ++s[k].r < s[k].r_end)                                           \
        lane_row(&s[k], g);
    PC_LANE_LOCALS(0)
    PC_LANE_LOCALS(1)
    PC_LANE_LOCALS(2)
    PC_LANE_LOCALS(3)
    for (int64_t i = 0; i < run; i++) {
        PC_LANE_STEP(0)
        PC_LANE_STEP(1)
        PC_LANE_STEP(2)
        PC_LANE_STEP(3)
    }
    PC_LANE_STORE(0)
    PC_LANE_STORE(1)
    PC_LANE_STORE(2)
    PC_LANE_STORE(3)
#undef PC_LANE_LOCALS
#undef PC_LANE_STEP
#undef PC_LANE_STORE
}

/* Symbols below which a run of four lanes is not worth setting up. */
#define PC_MIN_RUN 16

/* The decoder of both modes (see grid_rans.h); `lane_outliers` (values mode) holds each
 * lane's count of outliers, which follow each other in `outliers`. */
PC_INLINE int decode_lanes(const uint64_t *states, const uint32_t *lengths,
                               const uint32_t *words, const grid_model *model,
                               int64_t n_tables, int64_t rows, int64_t lanes,
                               const float *outliers, const uint32_t *lane_outliers,
                               int64_t *escapes, const int values) {
    const int64_t n_symbols = model->escape + 1, m = model->m;
    const int64_t stride = PC_BUCKETS + n_symbols;
    uint64_t *blk = malloc(sizeof(uint64_t) * (size_t)(n_tables * stride));
    int64_t *next = malloc(sizeof(int64_t) * (size_t)n_symbols);
    int early = 0, inconsistent = 0, bad_escapes = 0;
    if (blk == NULL || next == NULL) {
        free(blk);
        free(next);
        return PC_GRID_NO_MEMORY;
    }
    for (int64_t t = 0; t < n_tables; t++) {
        uint64_t *b = blk + t * stride, *entry = b + PC_BUCKETS;
        uint32_t acc = 0;
        for (int64_t sym = 0; sym < n_symbols; sym++) {
            const uint64_t f = model->freqs[t * n_symbols + sym];
            entry[sym] = (uint64_t)sym | (uint64_t)acc << 16 | f << 32;
            acc += (uint32_t)f;
        }
        int64_t sym = 0;
        uint32_t end = (uint32_t)(entry[0] >> 32);
        for (uint32_t k = 0; k < PC_BUCKETS; k++) {
            while (end <= k * PC_BUCKET_SLOTS)
                end += (uint32_t)(entry[++sym] >> 32);
            b[k] = entry[sym];
        }
    }
    for (int64_t sym = 0; sym < n_symbols; sym++)
        next[sym] = model->ctx_of[sym] * stride;
    grid_model g = *model;
    g.blk = blk;
    g.next = next;
    g.row_base = model->contexts * stride;
    const uint32_t *seg = words;
    const float *next_out = outliers;
    /* four lanes at a time: their state chains overlap in the pipeline */
    for (int64_t l0 = 0; l0 < lanes; l0 += 4) {
        lane_state s[4] = {{0}};
        const int64_t n = lanes - l0 < 4 ? lanes - l0 : 4;
        for (int64_t k = 0; k < n; k++) {
            const int64_t l = l0 + k;
            const int64_t own = values ? lane_outliers[l] : 0;
            s[k] = (lane_state){states[l], seg, seg + lengths[l], lane_start(l, rows, lanes),
                                lane_start(l + 1, rows, lanes), 0, 0, 0, 0, PC_GRID_OK,
                                0, 1.0, next_out, next_out + own};
            seg += lengths[l];
            next_out += own;
            if (s[k].r < s[k].r_end && m > 0)
                lane_row(&s[k], &g);
        }
        int64_t common = lane_left(&s[0], m);
        for (int64_t k = 1; k < n; k++)
            common = lane_left(&s[k], m) < common ? lane_left(&s[k], m) : common;
        if (n == 4) {
            for (int64_t i = 0; i < common;) {
                int64_t run = common - i;
                for (int k = 0; k < 4; k++) {
                    const int64_t row_left = m - s[k].j, words_left = s[k].end - s[k].p;
                    run = row_left < run ? row_left : run;
                    run = words_left < run ? words_left : run;
                }
                if (run >= PC_MIN_RUN) {
                    run4(s, &g, run, values);
                    i += run;
                    continue;
                }
                i++;
                int ok = lane_step(&s[0], &g, values);
                ok &= lane_step(&s[1], &g, values);
                ok &= lane_step(&s[2], &g, values);
                ok &= lane_step(&s[3], &g, values);
                if (!ok)
                    break; /* a lane ended early: finish the others one by one */
            }
        }
        for (int64_t k = 0; k < n; k++) {
            while (lane_left(&s[k], m) > 0 && lane_step(&s[k], &g, values))
                ;
            if (s[k].status == PC_GRID_ENDS_EARLY)
                early = 1;
            else if (s[k].p != s[k].end || s[k].x != PC_GRID_STATE_LOW)
                inconsistent = 1;
            if (s[k].extra_escapes || s[k].next_out != s[k].out_end)
                bad_escapes = 1;
            escapes[l0 + k] = s[k].esc;
        }
    }
    free(blk);
    free(next);
    return early         ? PC_GRID_ENDS_EARLY
           : inconsistent ? PC_GRID_INCONSISTENT
           : bad_escapes  ? PC_GRID_BAD_ESCAPES
                          : PC_GRID_OK;
}

int pc_grid_decode(const uint64_t *states, const uint32_t *lengths, const uint32_t *words,
                   const uint8_t *group, const uint16_t *freqs, const uint8_t *ctx_of,
                   int64_t contexts, int64_t n_tables, int64_t n_symbols, int64_t rows,
                   int64_t m, int64_t lanes, uint16_t *out, int64_t *escapes) {
    const grid_model g = {.freqs = freqs, .ctx_of = ctx_of, .contexts = contexts,
                          .group = group, .m = m, .escape = n_symbols - 1, .out = out};
    return decode_lanes(states, lengths, words, &g, n_tables, rows, lanes, NULL, NULL, escapes,
                        0);
}

int pc_grid_decode_values(const uint64_t *states, const uint32_t *lengths,
                          const uint32_t *words, const uint8_t *group, const uint16_t *freqs,
                          const uint8_t *ctx_of, int64_t contexts, int64_t n_tables,
                          int64_t n_symbols, int64_t rows, int64_t m, int64_t lanes,
                          const double *row_steps, int64_t q_lo, const float *outliers,
                          const uint32_t *lane_outliers, float *values, int64_t *escapes) {
    const grid_model g = {.freqs = freqs,         .ctx_of = ctx_of, .contexts = contexts,
                          .group = group,         .m = m,           .escape = n_symbols - 1,
                          .values = values,       .row_steps = row_steps, .q_lo = q_lo};
    return decode_lanes(states, lengths, words, &g, n_tables, rows, lanes, outliers,
                        lane_outliers, escapes, 1);
}

int64_t pc_grid_encode(const uint16_t *symbols, const uint8_t *group, const uint16_t *freqs,
                       const uint8_t *ctx_of, int64_t contexts, int64_t n_tables,
                       int64_t n_symbols, int64_t rows, int64_t m, int64_t lanes,
                       uint64_t *states, uint32_t *lengths, uint32_t *words) {
    uint32_t *cum = cumulative(freqs, n_tables, n_symbols);
    int64_t total = 0;
    if (cum == NULL)
        return -1;
    for (int64_t l = 0; l < lanes; l++) {
        const int64_t r0 = lane_start(l, rows, lanes), r1 = lane_start(l + 1, rows, lanes);
        /* emit backwards from the end of this lane's room, so the words end up in
           decoding order; then move them down to follow the previous lane's */
        uint32_t *room = words + total, *w = room + (r1 - r0) * m;
        uint32_t *const top = w;
        uint64_t x = PC_GRID_STATE_LOW;
        for (int64_t r = r1 - 1; r >= r0; r--) {
            const int64_t base = group[r] * contexts;
            const uint16_t *sym = symbols + r * m;
            for (int64_t j = m - 1; j >= 0; j--) {
                const int64_t t = base + (j ? ctx_of[sym[j - 1]] : 0);
                const int64_t ts = t * n_symbols + sym[j];
                const uint64_t f = freqs[ts];
                if (f == 0) {
                    free(cum);
                    return -2;
                }
                if ((x >> (63 - PC_GRID_TABLE_BITS)) >= f) {
                    *--w = (uint32_t)x;
                    x >>= 32;
                }
                x = ((x / f) << PC_GRID_TABLE_BITS) + x % f + cum[ts];
            }
        }
        const int64_t n = top - w;
        memmove(room, w, sizeof(uint32_t) * (size_t)n);
        states[l] = x;
        lengths[l] = (uint32_t)n;
        total += n;
    }
    free(cum);
    return total;
}

void pc_grid_values(const uint16_t *symbols, int64_t rows, int64_t m, const double *row_steps,
                    int64_t q_lo, int64_t escape, float *out) {
    for (int64_t r = 0; r < rows; r++) {
        const double step = row_steps[r];
        const uint16_t *sym = symbols + r * m;
        float *o = out + r * m;
        for (int64_t j = 0; j < m; j++)
            o[j] = sym[j] == escape ? 0.0f : grid_value(q_lo + sym[j], step);
    }
}

void pc_grid_round(const double *values, const double *row_steps, int64_t rows, int64_t m,
                   int64_t limit, int64_t *q) {
    const double lim = (double)limit;
    for (int64_t r = 0; r < rows; r++) {
        const double step = row_steps[r];
        const double *v = values + r * m;
        int64_t *o = q + r * m;
        for (int64_t j = 0; j < m; j++) {
            double k = nearbyint(v[j] / step);
            k = k > lim ? lim : k;
            k = k < -lim ? -lim : k;
            o[j] = (int64_t)k;
        }
    }
}

void pc_grid_count(const uint16_t *symbols, int64_t rows, int64_t m, const int64_t *group,
                   const uint8_t *ctx_of, int64_t contexts, int64_t n_symbols, int64_t *counts) {
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *sym = symbols + r * m;
        int64_t *c = counts + group[r] * contexts * n_symbols;
        if (m > 0)
            c[sym[0]]++;
        for (int64_t j = 1; j < m; j++)
            c[ctx_of[sym[j - 1]] * n_symbols + sym[j]]++;
    }
}

int64_t pc_grid_symbols(const int64_t *q, int64_t n, int64_t q_lo, int64_t width,
                        uint16_t *symbols) {
    int64_t escaped = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t s = q[i] - q_lo;
        const int out = s < 0 || s >= width;
        escaped += out;
        symbols[i] = (uint16_t)(out ? width : s);
    }
    return escaped;
}

int pc_grid_spread(const uint16_t *symbols, int64_t rows, int64_t m, int64_t n_symbols,
                   double *spread) {
    int64_t *counts = calloc((size_t)(n_symbols > 0 ? n_symbols : 1), sizeof(int64_t));
    if (counts == NULL)
        return PC_GRID_NO_MEMORY;
    for (int64_t i = 0; i < rows * m; i++)
        counts[symbols[i]]++;
    int64_t center = 0;
    for (int64_t s = 1; s < n_symbols; s++)
        center = counts[s] > counts[center] ? s : center;
    free(counts);
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *sym = symbols + r * m;
        int64_t total = 0;
        for (int64_t j = 0; j < m; j++)
            total += sym[j] > center ? sym[j] - center : center - sym[j];
        spread[r] = (double)total / (double)m;
    }
    return PC_GRID_OK;
}

void pc_grid_contexts(int64_t q_lo, int64_t symbols, int64_t contexts, uint8_t *ctx_of) {
    const int64_t h = (contexts - 1) / 2;
    for (int64_t s = 0; s < symbols; s++) {
        const int64_t q = q_lo + s;
        int64_t bits = 0;
        for (uint64_t a = (uint64_t)(q < 0 ? -q : q); a; a >>= 1)
            bits++;
        ctx_of[s] = (uint8_t)(h + (q > 0 ? 1 : q < 0 ? -1 : 0) * (bits < h ? bits : h));
    }
    ctx_of[symbols] = (uint8_t)(contexts - 1);
}
