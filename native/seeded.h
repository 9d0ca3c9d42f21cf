/* Seeded tensors in the native decoder: the entry fields of `perm-rans`, `row-rans` and
 * `bucket-rans` (FORMAT.md 3.3, 3.5, section 9 items 8-10), checked when a file is
 * opened, for csrc/seeded_decode.c (the decoder the Python package runs) to decode.
 */
#ifndef PERMCODEC_SEEDED_H
#define PERMCODEC_SEEDED_H

#include <stdint.h>

#include "mpack.h"
#include "permfile.h"
#include "seeded_decode.h"

typedef struct {
    pc_seeded sd;     /* what the decoder needs */
    double *knots;    /* owned: sd.spec.knots */
    int64_t *weights; /* owned: sd.weights */
} pc_seed_fields;

/* The seed fields of a seeded entry `map` for tensor `t` in a file of `version`, checked
 * as the Python reader checks them when it opens a file. */
int pc_seed_parse(const pc_mp_value *map, const pc_tensor *t, uint32_t version,
                  pc_seed_fields *s, char *err, size_t err_len);
void pc_seed_free(pc_seed_fields *s);


#endif
