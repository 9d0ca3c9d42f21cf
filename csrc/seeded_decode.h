/* Decoding a seeded tensor (docs/FORMAT.md 4.3-4.5, 5): `perm-rans`, `row-rans` and
 * `bucket-rans`, exact and lossy, a run of rows at a time so the working set stays near
 * one run beside the output. The initial values come from seeded_init.c and the rANS
 * steps from multiset.c. The native decoder and the Python package both call it: they
 * parse and check the entry's fields (FORMAT section 9) and hand them over here.
 */
#ifndef PERMCODEC_SEEDED_DECODE_H
#define PERMCODEC_SEEDED_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "perm_format.h"
#include "seeded_init.h"

/* A seeded entry, its fields checked (FORMAT section 9 items 6 and 8-10, at open). */
typedef struct {
    const char *name; /* for messages */
    int coding;       /* PC_PERM_RANS, PC_ROW_RANS or PC_BUCKET_RANS */
    int dtype;        /* one of the four float dtypes */
    pc_init_spec spec;
    uint32_t k0, k1;
    uint64_t rows, m, lanes; /* R and m of 6.5 */
    /* bucket-rans */
    int bits, exact, has_words; /* has_words: `words` given (else the stream runs to the end) */
    const int64_t *weights;     /* 2^(bits+1) - 1 context weights */
    uint64_t words, refine_lanes;
} pc_seeded;

/* Where the decoded tensor goes: asked for once, after the first run of rows decoded (so
 * a payload that fails in its first run never costs the output's memory); it returns
 * room for rows x m storage values, or NULL if it cannot be allocated. */
typedef void *(*pc_output_fn)(void *ctx);

/* Bytes a decode takes beside its output, as permcodec/coding counts them for the
 * readers' memory limit: 128 per value of the largest run of rows, and for an exact
 * bucket-rans tensor one per value (the bucket of each, kept for the refinement). */
uint64_t pc_seeded_working_bytes(const pc_seeded *s);

/* Decode `length` payload bytes of entry `s` into the output `out` gives, `row-rans` lanes
 * on up to `threads` threads (1: this one only; runs of lanes are independent, the other
 * codings have one stream and decode on this thread). Returns PC_OK,
 * PC_E_FORMAT (a payload that does not fit the entry's fields), PC_E_INTEGRITY (a coded
 * stream that ends early or is inconsistent), PC_E_NOMEM or PC_E_UNSUPPORTED (perm-rans
 * or bucket-rans rows of 2**31 values, outside the kernels' domain: the numpy runs of
 * the package decode them), with a one-line message in
 * err naming the tensor. The caller checks the decoded digest. */
int pc_seeded_decode(const pc_seeded *s, const uint8_t *payload, uint64_t length,
                     pc_output_fn out, void *out_ctx, int threads, char *err, size_t err_len);

#endif
