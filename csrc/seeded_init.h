/* Seeded initial values without Python (docs/FORMAT.md 3.5, 5.1, 6, 7): what a reader
 * needs to regenerate a seeded tensor's initial values from its spec and Philox key, and
 * to form each row's value classes. Bit for bit the numpy reference:
 * permcodec/core/initializers.py (initial_rows, check_resolved), core/detmath.py,
 * core/philox.py, core/dtypes.py and coding/arrangement.py (row classes).
 *
 * Deterministic everywhere: IEEE binary64 + - * / in the order FORMAT 6-7 writes (build
 * with -ffp-contract=off and without -ffast-math; no x87 excess precision, i.e.
 * FLT_EVAL_METHOD 0), the one correctly rounded library sqrt FORMAT allows (the scalar
 * bounds of the kaiming and xavier kinds: link with -lm), and bit manipulation for the
 * rest: frexp, 2^e, sqrt, log, ndtri, exp and ndtr are 7.0-7.4 written out, binary32 ->
 * binary16 is done by hand. Stored values are host-endian (little-endian on every
 * platform the format targets): float64 and float32 as IEEE, float16 and bfloat16 as
 * u16 patterns.
 */
#ifndef PERMCODEC_SEEDED_INIT_H
#define PERMCODEC_SEEDED_INIT_H

#include <stddef.h>
#include <stdint.h>

#include "perm_format.h"

/* Kinds (FORMAT 3.5, 6.6), in the order of the table of 3.5. */
enum {
    PC_KIND_UNIFORM,
    PC_KIND_NORMAL,
    PC_KIND_TRUNC_NORMAL,
    PC_KIND_KAIMING_UNIFORM,
    PC_KIND_KAIMING_NORMAL,
    PC_KIND_XAVIER_UNIFORM,
    PC_KIND_XAVIER_NORMAL,
    PC_KIND_CONSTANT,
    PC_KIND_TWO_VALUE,
    PC_KIND_QUANTILE,
    PC_KIND_LEVELS,
    PC_KIND_COUNT
};

/* The casts of 6.8 on a binary32 bit pattern: binary16 (round to nearest even,
 * subnormals kept, overflow to inf, NaNs as numpy makes them) and bfloat16. */
uint16_t pc_half_bits(uint32_t f32);
uint16_t pc_bfloat16_bits(uint32_t f32);

/* The kind called name[0 .. len) (3.5), or -1; and the name of a kind (NULL if none). */
int pc_init_kind(const char *name, size_t len);
const char *pc_init_kind_name(int kind);

/* Statuses of pc_init_check, pc_init_rows and pc_row_classes. */
#define PC_INIT_OK 0
#define PC_INIT_E_SPEC 1     /* pc_init_check: the spec is not valid for the shape */
#define PC_INIT_E_ARGUMENT 2 /* a caller's mistake: bad dtype, rows out of range, ... */
#define PC_INIT_E_RANGE 3    /* a row to rank (density < 1, levels) longer than 2^32 */
#define PC_INIT_E_NOMEM 4    /* working memory could not be allocated */

/* The first format version that holds each kind added after version 1. */
#define PC_KIND_QUANTILE_SINCE 2
#define PC_KIND_LEVELS_SINCE 5
#define PC_INIT_MAX_KNOTS 4097
#define PC_INIT_MAX_LEVELS 128

/* A resolved spec (the `spec` map of a tensor entry). The caller (a msgpack parser)
 * fills it: it checks that the map has exactly the keys of its kind (3.5) with their
 * types (numbers -> double, ints -> the integer fields, `mode` "fan_in"/"fan_out" ->
 * mode_fan_out 0/1, `granularity` "row"/"tensor" -> tensor_granularity 0/1,
 * `random_sign` bool -> 0/1, `knots` -> an array of doubles it owns; fans < 0 are
 * malformed); fields the kind lacks are ignored. pc_init_check does the value checks. */
typedef struct {
    int kind;             /* PC_KIND_* */
    int64_t spec_version; /* the spec's `version`: 1 */
    double a, b, mean, std, gain, value, low, high, p, levels, scale;
    int mode_fan_out;       /* kaiming: 0 = mode "fan_in", 1 = "fan_out" */
    int random_sign;        /* constant: 0 or 1 */
    const double *knots;    /* quantile: n_knots knots */
    size_t n_knots;
    double density;         /* fraction kept per row, [0, 1] */
    int tensor_granularity; /* 0 = "row", 1 = "tensor" */
    uint64_t fan_in, fan_out;
} pc_init_spec;

/* The value checks of FORMAT 9 item 8 on a spec for a tensor of `shape` (0 <= ndim <= 8
 * dims, each < 2^40, the non-zero ones multiplying to < 2^48: the container's checks) in
 * a file of format `version`: spec_version 1, finite numbers, density in [0, 1], fans
 * equal to the shape's, and the rules of each kind; exactly what
 * permcodec.core.initializers.check_resolved accepts, plus the format version each kind
 * needs (quantile >= 2, levels >= 5).
 * Returns PC_INIT_OK, or PC_INIT_E_SPEC with a one-line message in err (NUL-terminated,
 * truncated to err_len; err may be NULL). */
int pc_init_check(const pc_init_spec *s, const uint64_t *shape, int ndim, uint32_t version,
                  char *err, size_t err_len);

/* Rows R and row length m of the spec's tensor (6.5): the rows of weight.flatten(1), or
 * one row with granularity "tensor" or fewer than 2 dims. (R, m) = (0, 0) when
 * shape[0] == 0 in row granularity. */
void pc_init_rows_shape(const pc_init_spec *s, const uint64_t *shape, int ndim, uint64_t *R,
                        uint64_t *m);

/* The initial values of rows [r0, r1) of an R x m tensor of `dtype` (PC_FLOAT64,
 * PC_FLOAT32, PC_FLOAT16 or PC_BFLOAT16) with stream key (k0, k1), written to `out`
 * ((r1 - r0) * m storage values, C order, any alignment): the bytes of
 * initial_rows(spec, key, shape, dtype, rows=(r0, r1)). The spec must have passed
 * pc_init_check and (R, m) come from pc_init_rows_shape. Working memory, allocated and
 * freed here: 32 KiB, plus 20 m bytes when rows are ranked (the levels kind, or a
 * density mask that keeps some but not all of a row). Rows are independent: a decoder
 * may regenerate them a run at a time, from any threads.
 * Returns PC_INIT_OK; PC_INIT_E_ARGUMENT for a bad dtype or kind, r0 > r1, r1 > R,
 * R * m >= 2^64 or parameters no check would pass (levels, knots, p); PC_INIT_E_RANGE
 * when rows are ranked and m > 2^32 (FORMAT 9 item 8 allows m <= 2^31);
 * PC_INIT_E_NOMEM. */
int pc_init_rows(const pc_init_spec *s, uint32_t k0, uint32_t k1, int dtype, uint64_t R,
                 uint64_t m, uint64_t r0, uint64_t r1, void *out);

/* Row classes (5.1) of one row of m storage values of `dtype` (what pc_init_rows
 * writes): classes are the row's distinct bit patterns in ascending order key
 * (-0.0 < +0.0, NaNs by pattern). Writes, each output optional (NULL: not wanted):
 *   order[q], q < m:       the position with sorted rank q; positions sort stably by
 *                          (order key, position), so order is the inverse of the
 *                          "initial rank" of 5.3;
 *   counts[c], c < n:      how many positions hold class c (the rANS model);
 *   values[c], c < n:      class c's bit pattern, a storage value of `dtype`
 *                          (position j decoded as class c receives values[c]);
 *   *n_classes:            n, the number of classes (0 for m = 0).
 * counts and values need room for m entries (n <= m). The class of sorted rank q is the
 * c with counts[0] + ... + counts[c-1] <= q < counts[0] + ... + counts[c].
 * Returns PC_INIT_OK, PC_INIT_E_ARGUMENT for a bad dtype, PC_INIT_E_RANGE for
 * m > 2^32, or PC_INIT_E_NOMEM (rows of more than 512 values take 16 m or, for
 * float64, 32 m bytes of working memory). */
int pc_row_classes(int dtype, const void *row, uint64_t m, uint32_t *order, uint64_t *counts,
                   void *values, uint64_t *n_classes);

/* Levels tensors (6.6, 6.7) without sorting their values: every row holds the same
 * multiset, so its classes (5.1) come from the spec alone. pc_levels_classes gives them
 * for rows of m: values[c] and counts[c] as pc_row_classes would (room for 2L + 1
 * each), and class_of_level[lev] (2L + 1 entries; UINT16_MAX for a level no position
 * holds). pc_init_level_rows writes the level of each position of rows [r0, r1): the
 * value there is the value of class class_of_level[level]. Same statuses as
 * pc_init_rows; both need a levels spec that passed pc_init_check. */
int pc_levels_classes(const pc_init_spec *s, int dtype, uint64_t m, void *values,
                      uint64_t *counts, uint16_t *class_of_level, uint64_t *n_classes);
int pc_init_level_rows(const pc_init_spec *s, uint32_t k0, uint32_t k1, uint64_t R, uint64_t m,
                       uint64_t r0, uint64_t r1, uint16_t *level);

/* The levels of rows one at a time, with the working memory made once: new returns NULL
 * if memory runs out (or for a spec that is not levels, m = 0 or m > 2**32); row writes
 * the m levels of row r (one of the tensor's rows) as pc_init_level_rows does, each
 * through map[level] unless map is NULL (2L + 1 entries: a decoder's class of each level). */
typedef struct pc_level_rows pc_level_rows;
pc_level_rows *pc_level_rows_new(const pc_init_spec *s, uint32_t k0, uint32_t k1, uint64_t m);
void pc_level_rows_row(pc_level_rows *lr, uint64_t r, const uint16_t *map, uint16_t *level);
void pc_level_rows_free(pc_level_rows *lr);

#ifdef PC_SEEDED_INIT_PROBES
/* For tests only (built with -DPC_SEEDED_INIT_PROBES): the functions of FORMAT 7 on one
 * binary64 (fn 0 log, 1 sqrt, 2 ndtri, 3 exp, 4 ndtr), ndtri as the generator runs it
 * on arrays (n < 2^32), and binary32 -> binary16 bits. */
double pc_probe_math(int fn, double x);
int pc_probe_ndtri_many(const double *u, size_t n, double *out);
uint16_t pc_probe_f16(uint32_t bits);
#endif

#endif
