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

int pc_grid_decode(const uint64_t *states, const uint32_t *lengths, const uint32_t *words,
                   const uint8_t *table_of, const uint16_t *freqs, int64_t n_tables,
                   int64_t n_symbols, int64_t rows, int64_t m, int64_t lanes, uint16_t *out,
                   int64_t *escapes) {
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
    const uint32_t *seg = words;
    for (int64_t l = 0; l < lanes; l++) {
        uint64_t x = states[l];
        const uint32_t *p = seg, *end = seg + lengths[l];
        int64_t esc = 0;
        seg = end;
        for (int64_t r = lane_start(l, rows, lanes); r < lane_start(l + 1, rows, lanes); r++) {
            const int64_t t = table_of[r];
            const uint16_t *lt = lut + t * PC_GRID_TABLE_ONE;
            const uint16_t *ft = freqs + t * n_symbols;
            const uint32_t *ct = cum + t * n_symbols;
            uint16_t *o = out + r * m;
            for (int64_t j = 0; j < m; j++) {
                const uint64_t slot = x & (PC_GRID_TABLE_ONE - 1);
                const uint16_t s = lt[slot];
                x = (uint64_t)ft[s] * (x >> PC_GRID_TABLE_BITS) + slot - ct[s];
                if (x < PC_GRID_STATE_LOW) {
                    if (p == end) {
                        early = 1;
                        goto next_lane;
                    }
                    x = (x << 32) | *p++;
                }
                o[j] = s;
                esc += s == n_symbols - 1;
            }
        }
        if (p != end || x != PC_GRID_STATE_LOW)
            inconsistent = 1;
    next_lane:
        escapes[l] = esc;
    }
    free(lut);
    free(cum);
    return early ? PC_GRID_ENDS_EARLY : inconsistent ? PC_GRID_INCONSISTENT : PC_GRID_OK;
}

int64_t pc_grid_encode(const uint16_t *symbols, const uint8_t *table_of, const uint16_t *freqs,
                       int64_t n_tables, int64_t n_symbols, int64_t rows, int64_t m,
                       int64_t lanes, uint64_t *states, uint32_t *lengths, uint32_t *words) {
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
            const int64_t t = table_of[r];
            const uint16_t *ft = freqs + t * n_symbols;
            const uint32_t *ct = cum + t * n_symbols;
            const uint16_t *sym = symbols + r * m;
            for (int64_t j = m - 1; j >= 0; j--) {
                const uint64_t f = ft[sym[j]];
                if ((x >> (63 - PC_GRID_TABLE_BITS)) >= f) {
                    *--w = (uint32_t)x;
                    x >>= 32;
                }
                x = ((x / f) << PC_GRID_TABLE_BITS) + x % f + ct[sym[j]];
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
