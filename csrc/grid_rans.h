/* Static-table interleaved rANS of the `grid-rans` coding (docs/FORMAT.md 4.6).
 *
 * Lane l codes rows [b[l], b[l+1]) with b[l] = floor(l * rows / lanes), each row's m
 * symbols in order. Symbol j of row r is coded with table group[r] * contexts + c, where
 * c is ctx_of[symbol j - 1 of the row] (0 for the first); tables sum to 2**15.
 * States live in [2**31, 2**63) and take one 32-bit word when they fall below 2**31.
 * Bit-identical to the numpy reference in permcodec/coding/static_rans.py.
 */
#ifndef PERMCODEC_GRID_RANS_H
#define PERMCODEC_GRID_RANS_H

#include <stdint.h>

#include "perm_format.h"

#define PC_GRID_TABLE_ONE ((uint32_t)1 << PC_GRID_TABLE_BITS)
#define PC_GRID_STATE_LOW ((uint64_t)1 << PC_STATE_LOW_BITS)

/* Statuses (shared with the other kernels, permcodec/kernels/contract.py). */
#define PC_GRID_OK 0
#define PC_GRID_INCONSISTENT 1
#define PC_GRID_ENDS_EARLY 2
#define PC_GRID_NO_MEMORY 4
#define PC_GRID_BAD_ESCAPES 8

/* Decode the symbols of every lane. `freqs` holds n_tables tables of n_symbols u16
 * frequencies, each summing to 2**15 (the caller checks); group[r] * contexts + ctx_of[s]
 * < n_tables for every row and symbol, and every state in [2**31, 2**63) (checked by
 * the caller too). Lane l reads words
 * [start_l, start_l + lengths[l]) of `words`, start_l the sum of earlier lengths.
 * Writes rows * m symbols to `out` (C order) and each lane's count of symbol
 * n_symbols - 1 (the escape) to `escapes`. Returns PC_GRID_ENDS_EARLY if a lane needs a
 * word past its segment, else PC_GRID_INCONSISTENT if a lane does not end with its
 * segment used up and its state at 2**31, else PC_GRID_OK. */
int pc_grid_decode(const uint64_t *states, const uint32_t *lengths, const uint32_t *words,
                   const uint8_t *group, const uint16_t *freqs, const uint8_t *ctx_of,
                   int64_t contexts, int64_t n_tables, int64_t n_symbols, int64_t rows,
                   int64_t m, int64_t lanes, uint16_t *out, int64_t *escapes);

/* pc_grid_decode fused with pc_grid_values: writes each symbol's float32 value to
 * `values` (rows x m) instead of the symbol, an escape taking its lane's next outlier:
 * lane l's are the lane_outliers[l] floats of `outliers` after the earlier lanes'.
 * Returns the statuses of pc_grid_decode, or else PC_GRID_BAD_ESCAPES when a lane's
 * escapes are not exactly its count of outliers. */
int pc_grid_decode_values(const uint64_t *states, const uint32_t *lengths,
                          const uint32_t *words, const uint8_t *group, const uint16_t *freqs,
                          const uint8_t *ctx_of, int64_t contexts, int64_t n_tables,
                          int64_t n_symbols, int64_t rows, int64_t m, int64_t lanes,
                          const double *row_steps, int64_t q_lo, const float *outliers,
                          const uint32_t *lane_outliers, float *values, int64_t *escapes);

/* The context each symbol sets for the next (FORMAT 4.6.3): ctx_of[s] for the `symbols`
 * grid symbols (index q_lo + s) and the escape (ctx_of[symbols] = contexts - 1);
 * `contexts` odd, at most 9. */
void pc_grid_contexts(int64_t q_lo, int64_t symbols, int64_t contexts, uint8_t *ctx_of);

/* Encode `symbols` (rows x m, C order) into lanes. Writes each lane's final state and
 * segment length, and the words of lane 0, lane 1, ... in decoding order to `words`
 * (room for rows * m words); returns the number of words, -1 if memory ran out, or -2
 * if a symbol has frequency 0 in its table. */
int64_t pc_grid_encode(const uint16_t *symbols, const uint8_t *group, const uint16_t *freqs,
                       const uint8_t *ctx_of, int64_t contexts, int64_t n_tables,
                       int64_t n_symbols, int64_t rows, int64_t m, int64_t lanes,
                       uint64_t *states, uint32_t *lengths, uint32_t *words);

/* The float32 values of decoded symbols: (float)((double)(q_lo + s) * row_steps[r]) for
 * each symbol s of row r (one exact binary64 product, one rounding), 0 for the escape
 * symbol (the caller puts the outliers there). */
void pc_grid_values(const uint16_t *symbols, int64_t rows, int64_t m, const double *row_steps,
                    int64_t q_lo, int64_t escape, float *out);

/* Encoder side. Each value divided by its row's step, rounded to the nearest integer
 * (ties to even, the default rounding mode) and clipped to [-limit, limit]: numpy's
 * clip(rint(values / row_steps[:, None]), -limit, limit) for finite values, as int64. */
void pc_grid_round(const double *values, const double *row_steps, int64_t rows, int64_t m,
                   int64_t limit, int64_t *q);

/* The symbol of each grid index: q - q_lo, or `width` (the escape) outside
 * [q_lo, q_lo + width); width < 2**16. Returns the number of escapes. */
int64_t pc_grid_symbols(const int64_t *q, int64_t n, int64_t q_lo, int64_t width,
                        uint16_t *symbols);

/* Each row's spread: the mean distance of its symbols (all < n_symbols) from the most
 * common symbol of all rows (the first, on a tie), as a binary64 quotient of the exact
 * integer sum by m. Returns PC_GRID_OK or PC_GRID_NO_MEMORY. */
int pc_grid_spread(const uint16_t *symbols, int64_t rows, int64_t m, int64_t n_symbols,
                   double *spread);

/* Adds to counts[group[r]][c][s] (groups x contexts x n_symbols, C order) one for each
 * symbol s of row r, c = ctx_of[the symbol before it in the row], 0 for the first. */
void pc_grid_count(const uint16_t *symbols, int64_t rows, int64_t m, const int64_t *group,
                   const uint8_t *ctx_of, int64_t contexts, int64_t n_symbols, int64_t *counts);

#endif
