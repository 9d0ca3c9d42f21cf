/* Philox4x32-10 (docs/FORMAT.md 6.1, 6.3): the counter-based generator behind every
 * stored random value. Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"
 * (SC 2011); identical to Random123 philox4x32_10 and to permcodec/core/philox.py.
 *
 * Word i of purpose p of the stream with key (k0, k1) is lane i mod 4 of
 * pc_philox4x32_10(b mod 2**32, b >> 32, p, 0, k0, k1) with the block b = i / 4.
 * Header only (static inline): the Python extension and the native decoder share it.
 */
#ifndef PERMCODEC_PHILOX_H
#define PERMCODEC_PHILOX_H

#include <stdint.h>

#define PC_PHILOX_M0 ((uint32_t)0xD2511F53u)
#define PC_PHILOX_M1 ((uint32_t)0xCD9E8D57u)
#define PC_PHILOX_W0 ((uint32_t)0x9E3779B9u)
#define PC_PHILOX_W1 ((uint32_t)0xBB67AE85u)
#define PC_PHILOX_ROUNDS 10

/* Purposes (6.3): independent sub-streams of one tensor's key. */
#define PC_PURPOSE_VALUES 0u
#define PC_PURPOSE_MASK 1u
#define PC_PURPOSE_SIGN 2u

/* The four words of one Philox4x32-10 block: counter (c0, c1, c2, c3), key (k0, k1). */
static inline void pc_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                    uint32_t k0, uint32_t k1, uint32_t out[4]) {
    for (int r = 0; r < PC_PHILOX_ROUNDS; r++) {
        uint64_t p0 = (uint64_t)PC_PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PC_PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += PC_PHILOX_W0;
        k1 += PC_PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Blocks per batch of pc_philox_words: the rounds run over a batch at once, in loops
 * the compiler can vectorise (32x32->64-bit products). */
#define PC_PHILOX_BATCH 64

/* Words [start, start + n) of purpose `purpose` of the stream (k0, k1) into out[0..n).
 * Always inlined, so a caller compiled for a wider vector unit vectorises it too. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void pc_philox_words(uint32_t k0, uint32_t k1, uint32_t purpose, uint64_t start,
                                   uint64_t n, uint32_t *out) {
    uint64_t i = 0, blk = start >> 2;
    uint32_t w[4];
    if (n == 0)
        return;
    if (start & 3u) { /* the partial first block */
        pc_philox4x32_10((uint32_t)blk, (uint32_t)(blk >> 32), purpose, 0, k0, k1, w);
        for (unsigned lane = (unsigned)(start & 3u); lane < 4 && i < n; lane++)
            out[i++] = w[lane];
        blk++;
    }
    while (n - i >= 4 * PC_PHILOX_BATCH) { /* whole batches, structure of arrays */
        uint32_t c0[PC_PHILOX_BATCH], c1[PC_PHILOX_BATCH], c2[PC_PHILOX_BATCH],
            c3[PC_PHILOX_BATCH];
        uint32_t key0 = k0, key1 = k1;
        for (int j = 0; j < PC_PHILOX_BATCH; j++) {
            c0[j] = (uint32_t)(blk + (uint64_t)j);
            c1[j] = (uint32_t)((blk + (uint64_t)j) >> 32);
            c2[j] = purpose;
            c3[j] = 0;
        }
        for (int r = 0; r < PC_PHILOX_ROUNDS; r++) {
            for (int j = 0; j < PC_PHILOX_BATCH; j++) {
                uint64_t p0 = (uint64_t)PC_PHILOX_M0 * c0[j];
                uint64_t p1 = (uint64_t)PC_PHILOX_M1 * c2[j];
                uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ key0;
                uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ key1;
                c1[j] = (uint32_t)p1;
                c3[j] = (uint32_t)p0;
                c0[j] = n0;
                c2[j] = n2;
            }
            key0 += PC_PHILOX_W0;
            key1 += PC_PHILOX_W1;
        }
        for (int j = 0; j < PC_PHILOX_BATCH; j++) {
            out[i + 4 * (uint64_t)j] = c0[j];
            out[i + 4 * (uint64_t)j + 1] = c1[j];
            out[i + 4 * (uint64_t)j + 2] = c2[j];
            out[i + 4 * (uint64_t)j + 3] = c3[j];
        }
        i += 4 * PC_PHILOX_BATCH;
        blk += PC_PHILOX_BATCH;
    }
    for (; n - i >= 4; i += 4, blk++)
        pc_philox4x32_10((uint32_t)blk, (uint32_t)(blk >> 32), purpose, 0, k0, k1, out + i);
    if (i < n) { /* the partial last block */
        pc_philox4x32_10((uint32_t)blk, (uint32_t)(blk >> 32), purpose, 0, k0, k1, w);
        for (unsigned lane = 0; lane < 4 && i < n; lane++)
            out[i++] = w[lane];
    }
}

#endif
