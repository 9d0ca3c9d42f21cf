/* Static-table rANS of the `level-rans` coding: see level_rans.h. */
#include "level_rans.h"

#include <stdlib.h>
#include <string.h>

#define SLOT_MASK (PC_LEVEL_TABLE_ONE - 1)

#if defined(__GNUC__)
#define PC_INLINE static inline __attribute__((always_inline))
#else
#define PC_INLINE static inline
#endif

/* One step of a lane (4.7.3): the symbol of context t, *st and *q moved on. Returns the
 * symbol, or -1 if the lane needs a word past its segment. */
PC_INLINE int level_step(const pc_level_model *model, uint64_t t, uint64_t *st,
                         const uint32_t **q, const uint32_t *end) {
    const uint32_t slot = (uint32_t)*st & SLOT_MASK;
    const uint16_t s = model->slot_symbol[t * PC_LEVEL_TABLE_ONE + slot];
    const uint32_t iv = model->interval[t * model->classes + s];
    *st = (uint64_t)(iv & 0xFFFF) * (*st >> PC_LEVEL_TABLE_BITS) + slot - (iv >> 16);
    if (*st < PC_LEVEL_STATE_LOW) {
        if (*q == end)
            return -1;
        *st = *st << 32 | *(*q)++;
    }
    return s;
}

int pc_level_model_make(const uint16_t *freqs, uint64_t classes, pc_level_model *model,
                        uint64_t *bad) {
    memset(model, 0, sizeof *model);
    for (uint64_t t = 0; t < classes; t++) {
        uint64_t sum = 0;
        for (uint64_t s = 0; s < classes; s++)
            sum += freqs[t * classes + s];
        if (sum != PC_LEVEL_TABLE_ONE) {
            *bad = t;
            return 1;
        }
    }
    const uint64_t n = classes ? classes : 1;
    model->classes = classes;
    model->slot_symbol = malloc(sizeof(uint16_t) * n * PC_LEVEL_TABLE_ONE);
    model->interval = malloc(sizeof(uint32_t) * n * n);
    if (model->slot_symbol == NULL || model->interval == NULL) {
        pc_level_model_free(model);
        return -1;
    }
    for (uint64_t t = 0; t < classes; t++) {
        uint32_t start = 0;
        for (uint64_t s = 0; s < classes; s++) {
            const uint32_t f = freqs[t * classes + s];
            model->interval[t * classes + s] = f | start << 16;
            for (uint32_t k = 0; k < f; k++)
                model->slot_symbol[t * PC_LEVEL_TABLE_ONE + start + k] = (uint16_t)s;
            start += f;
        }
    }
    return 0;
}

void pc_level_model_free(pc_level_model *model) {
    free(model->slot_symbol);
    free(model->interval);
    memset(model, 0, sizeof *model);
}

int pc_level_decode_row(const pc_level_model *model, const uint16_t *ctx, uint64_t m,
                        uint64_t *x, const uint32_t **p, const uint32_t *end, uint16_t *sym,
                        uint64_t *counts) {
    uint64_t state = *x;
    const uint32_t *q = *p;
    int status = 0;
    for (uint64_t j = 0; j < m && status == 0; j++) {
        const int s = level_step(model, ctx[j], &state, &q, end);
        if (s < 0)
            status = 2;
        else {
            sym[j] = (uint16_t)s;
            counts[s]++;
        }
    }
    *x = state;
    *p = q;
    return status;
}

int pc_level_decode_rows4(const pc_level_model *model, const uint16_t *const ctx[4],
                          uint64_t m, uint64_t x[4], const uint32_t *p[4],
                          const uint32_t *const end[4], uint16_t *const sym[4],
                          uint64_t *const counts[4]) {
    uint64_t st[4] = {x[0], x[1], x[2], x[3]};
    const uint32_t *q[4] = {p[0], p[1], p[2], p[3]};
    int status = 0;
    for (uint64_t j = 0; j < m && status == 0; j++)
        for (int k = 0; k < 4; k++) { /* four independent lanes: their latencies overlap */
            const int s = level_step(model, ctx[k][j], &st[k], &q[k], end[k]);
            if (s < 0)
                status = 2;
            else {
                sym[k][j] = (uint16_t)s;
                counts[k][s]++;
            }
        }
    for (int k = 0; k < 4; k++) {
        x[k] = st[k];
        p[k] = q[k];
    }
    return status;
}

int64_t pc_level_encode(const uint16_t *sym, const uint16_t *ctx, const uint16_t *freqs,
                        uint64_t classes, uint64_t rows, uint64_t m, uint64_t lanes,
                        uint64_t *states, uint32_t *lengths, uint32_t *words) {
    const uint64_t n = classes ? classes : 1;
    uint32_t *cum = malloc(sizeof(uint32_t) * n * n);
    int64_t total = 0;
    if (cum == NULL)
        return -1;
    for (uint64_t t = 0; t < classes; t++) {
        uint32_t acc = 0;
        for (uint64_t s = 0; s < classes; s++) {
            cum[t * classes + s] = acc;
            acc += freqs[t * classes + s];
        }
    }
    for (uint64_t l = 0; l < lanes; l++) {
        const uint64_t r0 = l * rows / lanes, r1 = (l + 1) * rows / lanes;
        /* emit backwards from the end of the lane's room, then move the words down */
        uint32_t *room = words + total, *w = room + (r1 - r0) * m;
        uint32_t *const top = w;
        uint64_t x = PC_LEVEL_STATE_LOW;
        for (uint64_t i = (r1 - r0) * m; i-- > 0;) {
            const uint64_t at = r0 * m + i;
            const uint64_t ts = (uint64_t)ctx[at] * classes + sym[at];
            const uint64_t f = freqs[ts];
            if (f == 0) {
                free(cum);
                return -2;
            }
            if ((x >> (63 - PC_LEVEL_TABLE_BITS)) >= f) {
                *--w = (uint32_t)x;
                x >>= 32;
            }
            x = ((x / f) << PC_LEVEL_TABLE_BITS) + x % f + cum[ts];
        }
        const int64_t k = top - w;
        memmove(room, w, sizeof(uint32_t) * (size_t)k);
        states[l] = x;
        lengths[l] = (uint32_t)k;
        total += k;
    }
    free(cum);
    return total;
}
