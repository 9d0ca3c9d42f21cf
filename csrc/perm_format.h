/* The .perm format's constants for C (docs/FORMAT.md), in one place for the kernels and
 * the native decoder. tests/test_native_decoder.py checks each against the Python
 * package's value, so the two languages cannot drift apart.
 */
#ifndef PERMCODEC_PERM_FORMAT_H
#define PERMCODEC_PERM_FORMAT_H

#include <stdint.h>

/* Every integer of a file is little-endian (section 1). */
static inline uint32_t pc_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t pc_le64(const uint8_t *p) {
    return (uint64_t)pc_le32(p) | (uint64_t)pc_le32(p + 4) << 32;
}

/* Container (sections 2, 9) */
#define PC_FORMAT_VERSION 7
#define PC_MAGIC_BYTES {0x89, 'P', 'E', 'R', 'M', '\r', '\n', 0x1a}
#define PC_ALIGN 64
#define PC_MAX_HEADER ((uint64_t)64 << 20)
#define PC_MAX_TENSORS ((uint64_t)1 << 20)
#define PC_MAX_EXTENT ((uint64_t)1 << 48)
#define PC_MAX_DIM ((uint64_t)1 << 40)
#define PC_MAX_SHAPE_DIMS 8
#define PC_DEFAULT_MAX_BYTES ((uint64_t)4 << 30)

/* Statuses of the C decoders; the native CLI maps them to its exit codes. */
enum {
    PC_OK = 0,
    PC_E_IO = 1,          /* the file cannot be read */
    PC_E_FORMAT = 2,      /* malformed (section 9 of FORMAT.md) */
    PC_E_INTEGRITY = 3,   /* a digest or a coded stream does not match: damaged */
    PC_E_UNSUPPORTED = 4, /* a newer format version, or a coding this build lacks */
    PC_E_LIMIT = 5,       /* decoding would take more memory than allowed */
    PC_E_NOMEM = 6,
    PC_E_ARGUMENT = 7 /* a caller's mistake: no such tensor, a buffer too small */
};

/* Codings (3.3) */
enum { PC_RAW, PC_RAW_ZSTD, PC_PERM_RANS, PC_BUCKET_RANS, PC_ROW_RANS, PC_GRID_RANS, PC_LEVEL_RANS };

/* Dtypes (3.4), in the order of the table */
enum {
    PC_FLOAT64, PC_FLOAT32, PC_FLOAT16, PC_BFLOAT16, PC_INT64, PC_INT32, PC_INT16,
    PC_INT8, PC_UINT8, PC_BOOL
};

/* rANS (4.3-4.6): states live in [2**31, 2**63); the multiset codings' probabilities
 * are 31-bit (4.3) */
#define PC_STATE_LOW_BITS 31
#define PC_PROB_BITS 31

/* grid-rans (3.3, 4.6) */
#define PC_GRID_TABLE_BITS 15
#define PC_GRID_MAX_STEPS 65536
#define PC_GRID_MAX_SYMBOLS 32768
#define PC_GRID_MAX_TABLES 256
#define PC_GRID_MAX_CONTEXTS 9
#define PC_GRID_MAX_INDEX ((int64_t)1 << 24)


/* level-rans (3.3, 4.7): a table per initial class, frequencies summing to 2**12 */
#define PC_LEVEL_TABLE_BITS 12
#define PC_LEVEL_MAX_CLASSES 257

#endif
