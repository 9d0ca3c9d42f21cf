/* LaPerm's sync on CPU float32 rows (permcodec/laperm/sync.py): rank every weight of a
 * row, then write the initial value of the same rank in its place, in the order
 * torch.argsort(stable=True) gives. The ranking sorts one uint32 per weight: the high
 * bits of its order key and, in the low b bits, its index (2**b >= m); the caller sorts
 * the words (numpy's SIMD sort), and pc_sync_place puts each run of words whose high
 * bits agree in full key order before it places the values, so the ranking is exact.
 */
#ifndef PERMCODEC_LAPERM_SYNC_H
#define PERMCODEC_LAPERM_SYNC_H

#include <stdint.h>

/* Rows longer than this leave too few key bits beside the index. */
#define PC_SYNC_MAX_M ((int64_t)1 << 16)

/* Bits that hold an index below m (at least 1). */
int pc_sync_index_bits(int64_t m);

/* out[r][j] = (the high 32 - b bits of weight (r, j)'s order key) | j, for rows x m
 * float32 weights (-0.0 keyed as +0.0). Returns 0 if a weight is NaN, else 1. */
int pc_sync_pack(const float *w, int64_t rows, int64_t m, int b, uint32_t *out);

/* With each row of `packed` sorted: w[r][index of rank k] = sorted_init[r][k], ranks
 * exact (ties by index). Returns 0 if scratch cannot be allocated, else 1. */
int pc_sync_place(const uint32_t *packed, int64_t rows, int64_t m, int b,
                  const float *sorted_init, float *w);

#endif
