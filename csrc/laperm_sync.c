/* LaPerm's sync on float32 rows: see laperm_sync.h. */
#include "laperm_sync.h"

#include <stdlib.h>
#include <string.h>

/* Unsigned key in float order of float32 bits x, -0.0 equal to +0.0 (the order key of
 * permcodec/kernels/contract.py, shifted to unsigned). */
static uint32_t key_of(uint32_t x) {
    if (x == 0x80000000u)
        x = 0;
    return x & 0x80000000u ? ~x : x | 0x80000000u;
}

static uint32_t bits_of(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

int pc_sync_index_bits(int64_t m) {
    int b = 1;
    while (b < 63 && ((int64_t)1 << b) < m)
        b++;
    return b;
}

int pc_sync_pack(const float *w, int64_t rows, int64_t m, int b, uint32_t *out) {
    const uint32_t low = (uint32_t)((1u << b) - 1u);
    for (int64_t i = 0; i < rows * m; i++) {
        const uint32_t x = bits_of(w[i]);
        if ((x & 0x7FFFFFFFu) > 0x7F800000u)
            return 0;
        out[i] = (key_of(x) & ~low) | (uint32_t)(i % m);
    }
    return 1;
}

int pc_sync_place(const uint32_t *packed, int64_t rows, int64_t m, int b,
                  const float *sorted_init, float *w) {
    const uint32_t low = (uint32_t)((1u << b) - 1u);
    int64_t *order = malloc(sizeof(int64_t) * (size_t)(m ? m : 1));
    uint32_t *keys = malloc(sizeof(uint32_t) * (size_t)(m ? m : 1));
    if (order == NULL || keys == NULL) {
        free(order);
        free(keys);
        return 0;
    }
    for (int64_t r = 0; r < rows; r++) {
        const uint32_t *row = packed + r * m;
        const float *init = sorted_init + r * m;
        float *out = w + r * m;
        int64_t k = 0;
        while (k < m) {
            const uint32_t high = row[k] & ~low;
            if (k + 1 == m || (row[k + 1] & ~low) != high) {
                out[row[k] & low] = init[k];
                k++;
                continue;
            }
            /* a run of equal high bits (values within about 2**(b-23) of each other,
             * rare): read its weights before any is written, order it by full key */
            int64_t stop = k + 1;
            while (stop < m && (row[stop] & ~low) == high)
                stop++;
            for (int64_t i = k; i < stop; i++) {
                order[i] = (int64_t)(row[i] & low);
                keys[i] = key_of(bits_of(out[order[i]]));
            }
            for (int64_t i = k + 1; i < stop; i++) { /* insertion sort of a short run */
                const uint32_t kk = keys[i];
                const int64_t jj = order[i];
                int64_t h = i - 1;
                while (h >= k && (keys[h] > kk || (keys[h] == kk && order[h] > jj))) {
                    keys[h + 1] = keys[h];
                    order[h + 1] = order[h];
                    h--;
                }
                keys[h + 1] = kk;
                order[h + 1] = jj;
            }
            for (int64_t i = k; i < stop; i++)
                out[order[i]] = init[i];
            k = stop;
        }
    }
    free(order);
    free(keys);
    return 1;
}
