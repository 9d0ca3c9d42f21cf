/* Static-table interleaved rANS of the `grid-rans` coding: see grid_rans.h. */
#include "grid_rans.h"

#include <stdlib.h>
#include <string.h>

/* Start of every symbol's interval in each table (n_tables x n_symbols). */
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
    int64_t base, t;     /* the row's first table, the current symbol's table */
    int64_t esc;
    int status;
} lane_state;

typedef struct {
    const uint16_t *lut, *freqs;
    const uint32_t *cum;
    const uint8_t *group, *ctx_of;
    int64_t contexts, n_symbols, m;
    uint16_t *out;
} grid_model;

static void lane_row(lane_state *s, const grid_model *g) {
    s->j = 0;
    s->base = g->group[s->r] * g->contexts;
    s->t = s->base;
}

/* Decode one symbol of a lane that has one left; false when its stream ends early. */
static inline int lane_step(lane_state *s, const grid_model *g) {
    const uint64_t slot = s->x & (PC_GRID_TABLE_ONE - 1);
    const uint16_t sym = g->lut[s->t * PC_GRID_TABLE_ONE + slot];
    const int64_t ts = s->t * g->n_symbols + sym;
    uint64_t x = (uint64_t)g->freqs[ts] * (s->x >> PC_GRID_TABLE_BITS) + slot - g->cum[ts];
    if (x < PC_GRID_STATE_LOW) {
        if (s->p == s->end) {
            s->status = PC_GRID_ENDS_EARLY;
            return 0;
        }
        x = (x << 32) | *s->p++;
    }
    s->x = x;
    g->out[s->r * g->m + s->j] = sym;
    s->esc += sym == g->n_symbols - 1;
    s->t = s->base + g->ctx_of[sym];
    if (++s->j == g->m && ++s->r < s->r_end)
        lane_row(s, g);
    return 1;
}

static int64_t lane_left(const lane_state *s, int64_t m) {
    return s->status ? 0 : (s->r_end - s->r) * m - s->j;
}

int pc_grid_decode(const uint64_t *states, const uint32_t *lengths, const uint32_t *words,
                   const uint8_t *group, const uint16_t *freqs, const uint8_t *ctx_of,
                   int64_t contexts, int64_t n_tables, int64_t n_symbols, int64_t rows,
                   int64_t m, int64_t lanes, uint16_t *out, int64_t *escapes) {
    /* lut[t][slot]: the symbol of table t whose interval holds slot */
    uint16_t *lut = malloc(sizeof(uint16_t) * (size_t)(n_tables * PC_GRID_TABLE_ONE));
    uint32_t *cum = cumulative(freqs, n_tables, n_symbols);
    int early = 0, inconsistent = 0;
    if (lut == NULL || cum == NULL) {
        free(lut);
        free(cum);
        return PC_GRID_NO_MEMORY;
    }
    for (int64_t t = 0; t < n_tables; t++) {
        uint16_t *row = lut + t * PC_GRID_TABLE_ONE;
        for (int64_t s = 0; s < n_symbols; s++) {
            uint32_t c = cum[t * n_symbols + s], f = freqs[t * n_symbols + s];
            for (uint32_t k = 0; k < f; k++)
                row[c + k] = (uint16_t)s;
        }
    }
    const grid_model g = {lut, freqs, cum, group, ctx_of, contexts, n_symbols, m, out};
    const uint32_t *seg = words;
    /* four lanes at a time: their state chains overlap in the pipeline */
    for (int64_t l0 = 0; l0 < lanes; l0 += 4) {
        lane_state s[4];
        const int64_t n = lanes - l0 < 4 ? lanes - l0 : 4;
        for (int64_t k = 0; k < n; k++) {
            const int64_t l = l0 + k;
            s[k] = (lane_state){states[l], seg, seg + lengths[l], lane_start(l, rows, lanes),
                                lane_start(l + 1, rows, lanes), 0, 0, 0, 0, PC_GRID_OK};
            seg += lengths[l];
            if (s[k].r < s[k].r_end && m > 0)
                lane_row(&s[k], &g);
        }
        int64_t common = lane_left(&s[0], m);
        for (int64_t k = 1; k < n; k++)
            common = lane_left(&s[k], m) < common ? lane_left(&s[k], m) : common;
        if (n == 4) {
            for (int64_t i = 0; i < common; i++) {
                int ok = lane_step(&s[0], &g);
                ok &= lane_step(&s[1], &g);
                ok &= lane_step(&s[2], &g);
                ok &= lane_step(&s[3], &g);
                if (!ok)
                    break; /* a lane ended early: finish the others one by one */
            }
        }
        for (int64_t k = 0; k < n; k++) {
            while (lane_left(&s[k], m) > 0 && lane_step(&s[k], &g))
                ;
            if (s[k].status == PC_GRID_ENDS_EARLY)
                early = 1;
            else if (s[k].p != s[k].end || s[k].x != PC_GRID_STATE_LOW)
                inconsistent = 1;
            escapes[l0 + k] = s[k].esc;
        }
    }
    free(lut);
    free(cum);
    return early ? PC_GRID_ENDS_EARLY : inconsistent ? PC_GRID_INCONSISTENT : PC_GRID_OK;
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
            o[j] = sym[j] == escape ? 0.0f : (float)((double)(q_lo + sym[j]) * step);
    }
}
