/* Static-table rANS of the `level-rans` coding (docs/FORMAT.md 4.7).
 *
 * A levels tensor's rows hold the same C classes; the symbol at each position is its
 * class, coded with the table of the class of the position's *initial* value. Tables
 * (C x C u16, row i the table of initial class i) sum to 2**12. Lanes are those of
 * row-rans (4.5): lane l codes rows [b[l], b[l+1]), b[l] = floor(l R / L), into its own
 * word segment; states live in [2**31, 2**63) and take one 32-bit word when they fall
 * below 2**31. Bit-identical to the numpy reference in permcodec/coding/level_rans.py.
 */
#ifndef PERMCODEC_LEVEL_RANS_H
#define PERMCODEC_LEVEL_RANS_H

#include <stdint.h>

#include "perm_format.h"

#define PC_LEVEL_TABLE_ONE ((uint32_t)1 << PC_LEVEL_TABLE_BITS)
#define PC_LEVEL_STATE_LOW ((uint64_t)1 << PC_STATE_LOW_BITS)

/* What a decoder steps with, made once per tensor from its tables (read-only after). */
typedef struct {
    uint64_t classes;
    uint16_t *slot_symbol; /* classes x 2**12: the symbol whose interval holds each slot */
    uint32_t *interval;    /* classes x classes: frequency | start << 16 */
} pc_level_model;

/* Check the tables (each sums to 2**12) and build the model. Returns 0, 1 for a table
 * that does not sum to 2**12 (its index in *bad), or -1 if memory ran out. */
int pc_level_model_make(const uint16_t *freqs, uint64_t classes, pc_level_model *model,
                        uint64_t *bad);
void pc_level_model_free(pc_level_model *model);

/* Decode one row of m symbols: ctx[j] is the class of the initial value at position j
 * (< classes), sym receives the decoded classes and counts (classes entries, zeroed by
 * the caller) how many of each. *x is the lane's state, *p its next word and end the end
 * of its segment. Returns 0, or 2 if the lane needs a word past its segment. */
int pc_level_decode_row(const pc_level_model *model, const uint16_t *ctx, uint64_t m,
                        uint64_t *x, const uint32_t **p, const uint32_t *end, uint16_t *sym,
                        uint64_t *counts);

/* Four rows of four lanes at once, as pc_level_decode_row on each (their steps
 * interleaved): ctx[k], sym[k], counts[k], x[k], p[k] and end[k] are lane k's. Returns 0,
 * or 2 if a lane needs a word past its segment (the states are then not meaningful). */
int pc_level_decode_rows4(const pc_level_model *model, const uint16_t *const ctx[4],
                          uint64_t m, uint64_t x[4], const uint32_t *p[4],
                          const uint32_t *const end[4], uint16_t *const sym[4],
                          uint64_t *const counts[4]);

/* Encode rows x m symbols (classes, C order) with their contexts (same layout) into
 * `lanes` lanes. Writes each lane's final state and segment length and the words of
 * lane 0, lane 1, ... in decoding order (room for rows * m words). Returns the number of
 * words, -1 if memory ran out, or -2 if a symbol has frequency 0 in its table. */
int64_t pc_level_encode(const uint16_t *sym, const uint16_t *ctx, const uint16_t *freqs,
                        uint64_t classes, uint64_t rows, uint64_t m, uint64_t lanes,
                        uint64_t *states, uint32_t *lengths, uint32_t *words);

#endif
