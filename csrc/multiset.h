/* The multiset rANS kernels of the seeded codings `perm-rans`, `row-rans` and
 * `bucket-rans` (docs/FORMAT.md 4.3-4.5, 5): their decoders and encoders, bit-identical
 * to the numpy reference of permcodec/coding/rans.py on every input that the checks of
 * permcodec/kernels/rans_host.py let through. Plain C99 without Python: the Cython
 * module permcodec/kernels/rans_c.pyx wraps it for the package, and the native decoder
 * can call it as it is.
 *
 * Conventions. States are int64 in [2**31, 2**63) on entry; a damaged stream may carry
 * them out of that range, and the arithmetic then wraps as numpy's int64 does (never
 * signed overflow in C). Probabilities are 31-bit (PC_PROB_BITS): a step of interval
 * [below, below + f) of `total` codes [below * 2**31 / total, (below + f) * 2**31 / total).
 * 2-D arrays are row-major with a row stride in elements (`*_stride`). Multi-lane
 * decoders of one stream take the words of their lanes in lane order, step by step;
 * `row-rans` lanes each have a segment of their own. Every function allocates its own
 * scratch (malloc, freed before it returns) unless said otherwise, keeps no global
 * state and may run on several threads at once. Statuses are those of
 * permcodec/kernels/contract.py, plus PC_MS_NO_MEMORY.
 */
#ifndef PERMCODEC_MULTISET_H
#define PERMCODEC_MULTISET_H

#include <stdint.h>

#include "perm_format.h"

/* Statuses (permcodec/kernels/contract.py) */
#define PC_MS_OK 0
#define PC_MS_INCONSISTENT 1 /* a step with an empty interval, or a stream that does not end
                              * with its words used up and its states at 2**31 */
#define PC_MS_ENDS_EARLY 2   /* a lane needs a word past the end of its stream */
#define PC_MS_FALLBACK 3     /* input outside the kernel's domain: the reference decides */
#define PC_MS_NO_MEMORY 4    /* scratch could not be allocated */

/* Rows of more values are outside the perm-rans and row-rans decoders' domain
 * (PC_MS_FALLBACK): a step's probability would fall below 2**-31, and their trees of
 * distinct values count in 32 bits. */
#define PC_MS_MAX_ROW ((int64_t)1 << 31)

/* Entries of the table of reciprocals of pc_ms_recip_fill. */
#define PC_MS_RECIP_SIZE 65536

/* Fills table[0 .. PC_MS_RECIP_SIZE) with ceil(2**63 / d) (0 for d = 0), which turns the
 * decoders' divisions by totals below 2**16 into multiplications. Made once by the
 * caller and shared, read-only, by any number of calls and threads; every decoder that
 * takes `recip` also accepts NULL, and then divides. */
void pc_ms_recip_fill(uint64_t *table);

/* Depth of the implicit binary tree over k leaves: the least d with 2**d >= k (0 for
 * k <= 1). */
int pc_ms_levels(int64_t k);

/* The implicit binary tree over m leaves padded to 2**levels (levels =
 * pc_ms_levels(m)): tree[v] = how many real leaves node v's left subtree holds, for
 * v in [1, 2**levels), and tree[0] = 0; `tree` has 2**levels entries, m is at most
 * PC_MS_MAX_ROW. Returns levels. */
int pc_ms_left_counts(int64_t m, int32_t *tree);

/* row-rans (4.4): lane l decodes rows [bounds[l], bounds[l + 1]) (bounds non-decreasing
 * from 0) from its state x[l] and its segment words[starts[l], starts[l + 1]) (starts
 * non-decreasing from 0). A row r of classes (counts[r][0 .. n), each in [0, m], summing
 * to m) or, where distinct[r], of m distinct values (n == m) writes its m class
 * indices to out row r. Each lane's final state goes to x[l], its status to status[l]
 * (OK, ENDS_EARLY, or INCONSISTENT where `final` and it does not end with its segment
 * used up and its state at 2**31) and the words it read to used[l]. Returns PC_MS_OK,
 * PC_MS_FALLBACK (m outside [1, PC_MS_MAX_ROW]) or PC_MS_NO_MEMORY. */
int pc_ms_decode_rows(int64_t *x, int64_t lanes, const int64_t *starts, const uint32_t *words,
                      const int64_t *counts, int64_t counts_stride, int64_t n,
                      const uint8_t *distinct, const int64_t *bounds, int64_t m, int final,
                      const uint64_t *recip, int64_t *out, int64_t out_stride,
                      int64_t *status, int64_t *used);

/* perm-rans without totals (4.3), the first half: `rows` rows of counts as for
 * pc_ms_decode_rows decode in groups of `lanes`, lane l of group g decoding row
 * g * lanes + l, all lanes of a group stepping together on the one stream words[0,
 * n_words). Step j of lane l of group g goes to code[(g * m + j) * lanes + l] (groups x m
 * x lanes, groups = ceil(rows / lanes); entries of lanes past the last row are left as
 * they are): its class index, or for a distinct row its Lehmer digit
 * (pc_ms_lehmer_to_classes makes them class indices). Lane states are updated in x;
 * *pos gets the words read. Returns PC_MS_OK, PC_MS_ENDS_EARLY, PC_MS_INCONSISTENT
 * (`final` and the stream does not end with its words used up and every state at
 * 2**31), PC_MS_FALLBACK (m outside [1, PC_MS_MAX_ROW]) or PC_MS_NO_MEMORY. */
int pc_ms_decode_mixed(int64_t *x, int64_t lanes, const uint32_t *words, int64_t n_words,
                       const int64_t *counts, int64_t counts_stride, int64_t rows, int64_t n,
                       const uint8_t *distinct, int64_t m, int final, const uint64_t *recip,
                       int64_t *code, int64_t *pos);

/* perm-rans, the second half: row r of out gets row r of pc_ms_decode_mixed's `code`,
 * its Lehmer digits (each below the values left, as the decoder gives them) turned
 * into class indices where distinct[r]. Returns PC_MS_OK or PC_MS_NO_MEMORY. */
int pc_ms_lehmer_to_classes(const int64_t *code, int64_t rows, int64_t m, int64_t lanes,
                            const uint8_t *distinct, int64_t *out, int64_t out_stride);

/* perm-rans and bucket-rans (4.3, 4.5): the multiset decoder with, optionally, the
 * remaining total of every step (`totals`, rows x m, each at least 1; NULL: m - j at
 * step j). Lanes, groups and the stream as for pc_ms_decode_mixed; counts in [0, 2**31)
 * with row sums below 2**31. The class of a step is the reference's Fenwick search
 * (the most classes whose counts sum to at most the scaled state, at most n - 1);
 * bucket-major totals (each bucket's total counting down to 1 over classes that fill
 * it) take a faster path with a tree per bucket. Writes the classes to out (rows x m)
 * and the words read to *pos, updates x; returns PC_MS_OK, PC_MS_ENDS_EARLY,
 * PC_MS_INCONSISTENT or PC_MS_NO_MEMORY. */
int pc_ms_decode(int64_t *x, int64_t lanes, const uint32_t *words, int64_t n_words,
                 const int64_t *counts, int64_t counts_stride, int64_t rows, int64_t n,
                 const int64_t *totals, int64_t totals_stride, int64_t m, int final,
                 const uint64_t *recip, int64_t *out, int64_t out_stride, int64_t *pos);

/* bucket-rans's context model (4.5): rows of k bucket counts (counts in [0, 2**31), row
 * sums below 2**31), the context of every step (ctx, rows x m, each in [0, k)) and
 * 2k - 1 weights (each at least 1, a row sum times the largest at most 2**31): bucket t
 * under context i weighs weights[t - i + k - 1] per value left. Lanes, groups and the
 * stream as for pc_ms_decode_mixed. Writes the buckets to out (rows x m) and the words
 * read to *pos, updates x; returns PC_MS_OK, PC_MS_ENDS_EARLY, PC_MS_INCONSISTENT or
 * PC_MS_NO_MEMORY. */
int pc_ms_decode_ctx(int64_t *x, int64_t lanes, const uint32_t *words, int64_t n_words,
                     const int64_t *ctx, int64_t ctx_stride, const int64_t *counts,
                     int64_t counts_stride, int64_t rows, int64_t k, int64_t m,
                     const int64_t *weights, int final, int64_t *out, int64_t out_stride,
                     int64_t *pos);

/* The classes of sorted init rows (packed: rows x m words (order key << 32 | position),
 * each row sorted; a class is a run of equal keys): *most and *fewest get the most and
 * the fewest classes of a row (*fewest starts from m: m when there are no rows). */
void pc_ms_count_classes(const int64_t *packed, int64_t packed_stride, int64_t rows,
                         int64_t m, int64_t *most, int64_t *fewest);

/* What a bucket-rans decoder derives from its init (permcodec.coding.arrangement.
 * init_classes and permcodec.coding.buckets.bucketize), from the rows of pc_ms_count_classes
 * with k >= 1 buckets: counts (rows x n, n at least the most classes of a row; zero
 * past a row's classes) and sorted position of the first value (first, rows x n) of each
 * class, the bucket of every position's initial value (ctx, rows x m; bucket
 * floor(first rank * k / m) of its class) and the values per bucket (per_bucket, rows x
 * k). Returns PC_MS_OK, or PC_MS_FALLBACK if a position is not below m or m * k does
 * not fit 63 bits. */
int pc_ms_init_buckets(const int64_t *packed, int64_t packed_stride, int64_t rows, int64_t m,
                       int64_t k, int64_t *counts, int64_t counts_stride, int64_t n,
                       int64_t *first, int64_t first_stride, int64_t *ctx, int64_t ctx_stride,
                       int64_t *per_bucket, int64_t per_bucket_stride);

/* Rows of values from a bucket-major refinement (rebuild(unrefine(seq, sym), values) of
 * permcodec/coding/buckets.py): in row r, the positions p of bucket b = sym[r][p], in
 * ascending order, take the classes of b's part of seq[r] in turn, and each position its
 * class's value values[r][class]. Values are words of `width` bytes (2, 4 or 8); n
 * classes per row of values; strides in elements. Returns PC_MS_OK, PC_MS_FALLBACK (a
 * bucket outside [0, k), a class outside [0, n), or another width) or
 * PC_MS_NO_MEMORY. */
int pc_ms_place_refined(const int64_t *seq, int64_t seq_stride, const int64_t *sym,
                        int64_t sym_stride, int64_t rows, int64_t m, const void *values,
                        int64_t values_stride, int64_t n, int width, int64_t k, void *out,
                        int64_t out_stride);

/* row-rans encoder: lane l codes rows [bounds[l], bounds[l + 1]) of classes (cls, each
 * in [0, n)) of counts as for pc_ms_decode_rows (distinct[r]: counts all 1, n == m),
 * last row first. Its words fill buf from index bounds[l + 1] * m down, in decoding
 * order: lane l's are buf[seg[l], bounds[l + 1] * m) (buf: bounds[lanes] * m words).
 * Writes each lane's state to x. Returns PC_MS_OK, PC_MS_FALLBACK (a row's classes are
 * not its counts' multiset, or a step of an empty interval) or PC_MS_NO_MEMORY. */
int pc_ms_encode_rows(const int64_t *cls, int64_t cls_stride, const int64_t *counts,
                      int64_t counts_stride, int64_t n, const uint8_t *distinct,
                      const int64_t *bounds, int64_t lanes, int64_t m, int64_t *x,
                      int64_t *seg, uint32_t *buf);

/* Multiset encoder over groups of lanes (the inverse of pc_ms_decode): rows x m
 * classes (cls, each in [0, n)) with their counts (counts, checked against the rows)
 * and optional totals (NULL: m - j). Writes the lanes' states to x and returns in *words
 * (malloc'd, for the caller to free) the *n_words words in decoding order, starting from
 * room for `capacity` words. Returns PC_MS_OK, PC_MS_FALLBACK (a row that is not its
 * counts', a total below 1, a step of an empty interval) or PC_MS_NO_MEMORY; *words is
 * NULL unless PC_MS_OK. */
int pc_ms_encode(const int64_t *cls, int64_t cls_stride, int64_t rows, int64_t m,
                 const int64_t *counts, int64_t counts_stride, int64_t n,
                 const int64_t *totals, int64_t totals_stride, int64_t lanes,
                 int64_t capacity, int64_t *x, uint32_t **words, int64_t *n_words);

/* Context model encoder (the inverse of pc_ms_decode_ctx): buckets sym (rows x m, each
 * in [0, k)) under contexts ctx (each in [0, k)) with their counts (checked) and 2k - 1
 * weights (each at least 1, m times the largest at most 2**31). Results and statuses as
 * for pc_ms_encode. */
int pc_ms_encode_ctx(const int64_t *sym, int64_t sym_stride, const int64_t *ctx,
                     int64_t ctx_stride, int64_t rows, int64_t m, const int64_t *counts,
                     int64_t counts_stride, int64_t k, const int64_t *weights, int64_t lanes,
                     int64_t capacity, int64_t *x, uint32_t **words, int64_t *n_words);

#endif
