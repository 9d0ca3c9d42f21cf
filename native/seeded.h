/* Seeded tensors in the native decoder: the entry fields of `perm-rans`, `row-rans` and
 * `bucket-rans` (FORMAT.md 3.3, 3.5, section 9 items 8-10), checked when a file is
 * opened, and their decoding (4.3-4.5, 5), a run of rows at a time. The initial values
 * come from csrc/seeded_init.c and the rANS steps from csrc/multiset.c, the kernels the
 * Python package runs.
 */
#ifndef PERMCODEC_SEEDED_H
#define PERMCODEC_SEEDED_H

#include <stdint.h>

#include "mpack.h"
#include "permfile.h"
#include "seeded_init.h"

typedef struct {
    pc_init_spec spec;
    double *knots; /* owned copy of spec.knots */
    uint32_t k0, k1;
    uint64_t rows, m, lanes;
    /* bucket-rans */
    int bits, exact, has_words;
    int64_t *weights; /* 2K - 1, owned */
    uint64_t words, refine_lanes;
} pc_seed_fields;

/* The seed fields of a seeded entry `map` for tensor `t` in a file of `version`, checked
 * as the Python reader checks them when it opens a file. */
int pc_seed_parse(const pc_mp_value *map, const pc_tensor *t, uint32_t version,
                  pc_seed_fields *s, char *err, size_t err_len);
void pc_seed_free(pc_seed_fields *s);

/* Bytes a decode of the entry takes beside its output, as the Python reader counts them
 * for its memory limit (FORMAT.md section 9). */
uint64_t pc_seed_working_bytes(const pc_seed_fields *s, int coding);

/* Decode the payload into `out` (the tensor's storage bytes). */
int pc_seed_decode(const pc_seed_fields *s, const pc_tensor *t, const uint8_t *payload,
                   uint64_t length, uint8_t *out, char *err, size_t err_len);

#endif
