/* Static-table interleaved rANS of the `grid-rans` coding (docs/FORMAT.md 4.6).
 *
 * Lane l codes rows [b[l], b[l+1]) with b[l] = floor(l * rows / lanes), each row's m
 * symbols in order, with the frequency table the row names; tables sum to 2**15.
 * States live in [2**31, 2**63) and take one 32-bit word when they fall below 2**31.
 * Bit-identical to the numpy reference in permcodec/coding/static_rans.py.
 */
#ifndef PERMCODEC_GRID_RANS_H
#define PERMCODEC_GRID_RANS_H

#include <stdint.h>

#define PC_GRID_TABLE_BITS 15
#define PC_GRID_TABLE_ONE ((uint32_t)1 << PC_GRID_TABLE_BITS)
#define PC_GRID_STATE_LOW ((uint64_t)1 << 31)

/* Statuses (shared with the other kernels, permcodec/kernels/contract.py). */
#define PC_GRID_OK 0
#define PC_GRID_INCONSISTENT 1
#define PC_GRID_ENDS_EARLY 2
#define PC_GRID_NO_MEMORY 4

/* Decode the symbols of every lane. `freqs` holds n_tables tables of n_symbols u16
 * frequencies, each summing to 2**15 (the caller checks); `table_of[r]` < n_tables and
 * every state in [2**31, 2**63) (checked by the caller too). Lane l reads words
 * [start_l, start_l + lengths[l]) of `words`, start_l the sum of earlier lengths.
 * Writes rows * m symbols to `out` (C order) and each lane's count of symbol
 * n_symbols - 1 (the escape) to `escapes`. Returns PC_GRID_ENDS_EARLY if a lane needs a
 * word past its segment, else PC_GRID_INCONSISTENT if a lane does not end with its
 * segment used up and its state at 2**31, else PC_GRID_OK. */
int pc_grid_decode(const uint64_t *states, const uint32_t *lengths, const uint32_t *words,
                   const uint8_t *table_of, const uint16_t *freqs, int64_t n_tables,
                   int64_t n_symbols, int64_t rows, int64_t m, int64_t lanes, uint16_t *out,
                   int64_t *escapes);

/* Encode `symbols` (rows x m, C order; each with a nonzero frequency in its row's table,
 * checked by the caller) into lanes. Writes each lane's final state and segment length,
 * and the words of lane 0, lane 1, ... in decoding order to `words` (room for rows * m
 * words); returns the number of words, or -1 if memory ran out. */
int64_t pc_grid_encode(const uint16_t *symbols, const uint8_t *table_of, const uint16_t *freqs,
                       int64_t n_tables, int64_t n_symbols, int64_t rows, int64_t m,
                       int64_t lanes, uint64_t *states, uint32_t *lengths, uint32_t *words);

#endif
