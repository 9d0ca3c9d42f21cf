/* Reading `.perm` files (docs/FORMAT.md) without Python: open a file, list its tensors,
 * decode one into a caller's buffer, every checksum verified. This build decodes the
 * codings of models trained elsewhere (`raw`, `raw-zstd`, `grid-rans`); a seeded tensor
 * (`perm-rans`, `bucket-rans`, `row-rans`) is listed but refused as unsupported.
 */
#ifndef PERMCODEC_PERMFILE_H
#define PERMCODEC_PERMFILE_H

#include <stddef.h>
#include <stdint.h>

/* Statuses; the CLI maps them to its exit codes. */
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

/* Codings (3.3); the dtypes (3.4) are in perm_format.h. */
enum { PC_RAW, PC_RAW_ZSTD, PC_PERM_RANS, PC_BUCKET_RANS, PC_ROW_RANS, PC_GRID_RANS };

#include "perm_format.h"

#define PC_MAX_DIMS PC_MAX_SHAPE_DIMS

typedef struct {
    const char *name; /* NUL-terminated copy */
    int dtype, coding, ndim;
    uint64_t shape[PC_MAX_DIMS];
    uint64_t numel;  /* 1 for a scalar */
    uint64_t nbytes; /* numel x the dtype's size: what decoding writes */
} pc_tensor;

typedef struct pc_file pc_file;

/* Open and check `path`: preamble, header digest, header, every entry, the memory limit
 * (`max_bytes`; 0 for the default) and, with `verify_trailer`, the file's trailer. On
 * failure returns a status and writes one line to `err` (if not NULL). */
int pc_open(const char *path, uint64_t max_bytes, int verify_trailer, pc_file **out,
            char *err, size_t err_len);
void pc_close(pc_file *f);

uint32_t pc_version(const pc_file *f);
size_t pc_count(const pc_file *f);
const pc_tensor *pc_tensor_at(const pc_file *f, size_t i);
/* Index of the tensor named `name`, or -1. */
long pc_find(const pc_file *f, const char *name);

/* Decode tensor `i` into `out` (at least its nbytes): its payload digest checked before,
 * its decoded digest after. */
int pc_decode(pc_file *f, size_t i, void *out, size_t out_len, char *err, size_t err_len);

const char *pc_dtype_name(int dtype);
size_t pc_dtype_size(int dtype);
const char *pc_coding_name(int coding);
const char *pc_status_name(int status);

#endif
