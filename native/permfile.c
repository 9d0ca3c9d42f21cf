/* The container of docs/FORMAT.md (sections 2, 3, 8, 9) and the codings `raw`,
 * `raw-zstd` and `grid-rans` (4.1, 4.2, 4.6), checked in the order section 9 gives.
 * The grid decoder is csrc/grid_rans.c, the one the Python package runs.
 */
#define _POSIX_C_SOURCE 200809L
#include "permfile.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "blake2b.h"
#include "grid_rans.h"
#include "internal.h"
#include "mpack.h"
#include "seeded.h"
#include "seeded_init.h"

/* the msgpack reader's own bounds on a header */
#define MAX_DEPTH 64
#define MAX_ITEMS ((size_t)1 << 24)

static const uint8_t MAGIC[8] = PC_MAGIC_BYTES;

typedef struct {
    uint64_t steps, symbols, tables, contexts, outliers, lanes, side;
    int64_t q_lo;
    uint64_t rows, m;
} grid_fields;

typedef struct {
    pc_tensor t;
    uint64_t offset, length;
    uint8_t digest[16], payload_digest[16];
    grid_fields grid;
    pc_seed_fields seed;
} entry;

struct pc_file {
    const uint8_t *data;
    size_t size;
    uint32_t version;
    uint64_t payload_start; /* D */
    size_t count;
    entry *entries;
    char *names; /* the entries' names, NUL-terminated, back to back */
    int threads;
};

int pc_fail(char *err, size_t err_len, int status, const char *fmt, ...) {
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return status;
}

static int digest_matches(const uint8_t *data, size_t len, const uint8_t *want, size_t n) {
    uint8_t got[32];
    pc_blake2b(data, len, got, n);
    return memcmp(got, want, n) == 0;
}

/* ------------------------------------------------------------------ names */

static const char *const DTYPES[] = {"float64", "float32", "float16", "bfloat16", "int64",
                                     "int32",   "int16",   "int8",    "uint8",    "bool"};
static const size_t DTYPE_SIZES[] = {8, 4, 2, 2, 8, 4, 2, 1, 1, 1};
static const char *const CODINGS[] = {"raw",      "raw-zstd", "perm-rans", "bucket-rans",
                                      "row-rans", "grid-rans", "level-rans"};
/* The format version each coding first appears in. */
static const uint32_t CODING_SINCE[] = {1, 1, 1, 2, 3, 6, 7};

const char *pc_dtype_name(int dtype) {
    return dtype >= 0 && dtype <= PC_BOOL ? DTYPES[dtype] : "?";
}

size_t pc_dtype_size(int dtype) {
    return dtype >= 0 && dtype <= PC_BOOL ? DTYPE_SIZES[dtype] : 0;
}

const char *pc_coding_name(int coding) {
    return coding >= 0 && coding <= PC_LEVEL_RANS ? CODINGS[coding] : "?";
}

const char *pc_status_name(int status) {
    static const char *const names[] = {"ok",          "cannot read",  "malformed",
                                        "damaged",     "unsupported",  "over the limit",
                                        "out of memory", "bad argument"};
    return status >= 0 && status <= PC_E_ARGUMENT ? names[status] : "?";
}

static int lookup(const pc_mp_value *v, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (pc_mp_str_eq(v, names[i]))
            return i;
    return -1;
}

/* ------------------------------------------------------------------ the header */

int pc_get_uint(const pc_mp_value *map, const char *key, uint64_t limit, uint64_t *out) {
    const pc_mp_value *v = pc_mp_get(map, key);
    if (v == NULL || v->type != PC_MP_UINT || v->v.u >= limit)
        return 0;
    *out = v->v.u;
    return 1;
}

static int get_int(const pc_mp_value *map, const char *key, int64_t lo, int64_t hi,
                   int64_t *out) {
    const pc_mp_value *v = pc_mp_get(map, key);
    if (v == NULL)
        return 0;
    if (v->type == PC_MP_UINT && v->v.u <= (uint64_t)INT64_MAX && (int64_t)v->v.u < hi) {
        *out = (int64_t)v->v.u;
        return *out > lo;
    }
    if (v->type == PC_MP_INT && v->v.i > lo && v->v.i < hi) {
        *out = v->v.i;
        return 1;
    }
    return 0;
}

static int keys_are_strings(const pc_mp_value *map) {
    for (uint32_t k = 0; k < map->v.a.len; k++) {
        const pc_mp_type t = map->v.a.items[2 * k].type;
        if (t != PC_MP_STR && t != PC_MP_BIN)
            return 0;
    }
    return 1;
}

static int get_digest(const pc_mp_value *map, const char *key, uint8_t *out) {
    const pc_mp_value *v = pc_mp_get(map, key);
    if (v == NULL || v->type != PC_MP_BIN || v->v.s.len != 16)
        return 0;
    memcpy(out, v->v.s.ptr, 16);
    return 1;
}

/* (R, m) of a grid tensor: rows of weight.flatten(1) (4.6.1). */
static void grid_rows(const pc_tensor *t, uint64_t *rows, uint64_t *m) {
    if (t->ndim >= 2) {
        *rows = t->shape[0];
        *m = t->shape[0] ? t->numel / t->shape[0] : 0;
    } else {
        *rows = 1;
        *m = t->numel;
    }
}

static uint64_t grid_side_size(const entry *e) {
    const grid_fields *g = &e->grid;
    const uint64_t size = pc_dtype_size(e->t.dtype);
    uint64_t n = 4 * g->steps + g->rows * (g->steps > 256 ? 2 : 1) + g->rows +
                 2 * g->tables * g->contexts * (g->symbols + 1);
    if (g->outliers)
        n += 4 * g->lanes + g->outliers * size;
    return n;
}

/* The grid fields of 3.3, checked in range (section 9 item 11, at open). */
static int parse_grid(const pc_mp_value *map, entry *e, char *err, size_t err_len) {
    grid_fields *g = &e->grid;
    const char *name = e->t.name;
    grid_rows(&e->t, &g->rows, &g->m);
    const uint64_t rows1 = g->rows > 1 ? g->rows : 1;
    if (e->t.dtype > PC_BFLOAT16)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': grid-rans needs a float dtype", name);
    if (!pc_get_uint(map, "steps", PC_GRID_MAX_STEPS + 1, &g->steps) || g->steps < 1 ||
        g->steps > rows1)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': steps out of range", name);
    if (!pc_get_uint(map, "symbols", PC_GRID_MAX_SYMBOLS, &g->symbols) || g->symbols < 1)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': symbols out of range", name);
    if (!get_int(map, "q_lo", -PC_GRID_MAX_INDEX, PC_GRID_MAX_INDEX, &g->q_lo) ||
        g->q_lo + (int64_t)g->symbols - 1 >= PC_GRID_MAX_INDEX)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': q_lo out of range", name);
    if (!pc_get_uint(map, "tables", PC_GRID_MAX_TABLES + 1, &g->tables) || g->tables < 1 ||
        g->tables > rows1)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': tables out of range", name);
    if (!pc_get_uint(map, "contexts", PC_GRID_MAX_CONTEXTS + 1, &g->contexts) || g->contexts < 1 ||
        g->contexts % 2 == 0 || g->tables * g->contexts > PC_GRID_MAX_TABLES)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': contexts out of range", name);
    if (!pc_get_uint(map, "outliers", UINT64_MAX, &g->outliers) ||
        g->outliers > g->rows * g->m)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': outliers out of range", name);
    if (!pc_get_uint(map, "lanes", UINT64_MAX, &g->lanes) || g->lanes < 1 || g->lanes > rows1)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': lanes out of range", name);
    if (!pc_get_uint(map, "side", UINT64_MAX, &g->side))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': side out of range", name);
    return PC_OK;
}

/* Whether a `spec` map's kind, if it names one, exists in format `version` (the reader
 * checks this for every entry, whatever its coding). */
static int kind_in_version(const pc_mp_value *map, uint32_t version) {
    const pc_mp_value *spec = pc_mp_get(map, "spec");
    const pc_mp_value *kind = spec && spec->type == PC_MP_MAP ? pc_mp_get(spec, "kind") : NULL;
    if (pc_mp_str_eq(kind, "quantile"))
        return version >= PC_KIND_QUANTILE_SINCE;
    if (pc_mp_str_eq(kind, "levels"))
        return version >= PC_KIND_LEVELS_SINCE;
    return 1;
}

/* Item 5 of section 9 for one entry, plus the grid fields. `end`: the previous entry's
 * offset + length. */
static int parse_entry(const pc_file *f, const pc_mp_value *map, entry *e, char **name_at,
                       uint64_t *end, char *err, size_t err_len) {
    if (map->type != PC_MP_MAP || !keys_are_strings(map))
        return pc_fail(err, err_len, PC_E_FORMAT, "a tensor entry is not a map");
    const pc_mp_value *name = pc_mp_get(map, "name");
    if (name == NULL || name->type != PC_MP_STR || memchr(name->v.s.ptr, 0, name->v.s.len))
        return pc_fail(err, err_len, PC_E_FORMAT, "a tensor entry has no name");
    memcpy(*name_at, name->v.s.ptr, name->v.s.len);
    (*name_at)[name->v.s.len] = '\0';
    e->t.name = *name_at;
    *name_at += name->v.s.len + 1;
    const pc_mp_value *shape = pc_mp_get(map, "shape");
    if (shape == NULL || shape->type != PC_MP_ARRAY || shape->v.a.len > PC_MAX_DIMS)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad shape", e->t.name);
    e->t.ndim = (int)shape->v.a.len;
    uint64_t extent = 1, numel = 1;
    for (int d = 0; d < e->t.ndim; d++) {
        const pc_mp_value *v = &shape->v.a.items[d];
        if (v->type != PC_MP_UINT || v->v.u >= PC_MAX_DIM)
            return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad shape", e->t.name);
        e->t.shape[d] = v->v.u;
        if (v->v.u) {
            if (extent > (PC_MAX_EXTENT - 1) / v->v.u)
                return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': shape too large",
                            e->t.name);
            extent *= v->v.u;
        }
        numel = v->v.u ? numel * v->v.u : 0;
    }
    e->t.numel = numel;
    const pc_mp_value *coding = pc_mp_get(map, "coding");
    e->t.coding = coding ? lookup(coding, CODINGS, PC_LEVEL_RANS + 1) : -1;
    if (e->t.coding < 0 || CODING_SINCE[e->t.coding] > f->version)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': unknown coding for version %u",
                    e->t.name, f->version);
    const pc_mp_value *dtype = pc_mp_get(map, "dtype");
    e->t.dtype = dtype ? lookup(dtype, DTYPES, PC_BOOL + 1) : -1;
    if (e->t.dtype < 0)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': unknown dtype", e->t.name);
    e->t.nbytes = numel * pc_dtype_size(e->t.dtype);
    const uint64_t area = f->size - 32 - f->payload_start;
    if (!pc_get_uint(map, "offset", UINT64_MAX, &e->offset) ||
        !pc_get_uint(map, "length", UINT64_MAX, &e->length) || e->offset < *end ||
        e->offset > area || e->length > area - e->offset)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': payload outside the file",
                    e->t.name);
    *end = e->offset + e->length;
    if (!get_digest(map, "digest", e->digest) ||
        !get_digest(map, "payload_digest", e->payload_digest))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad digests", e->t.name);
    if (!kind_in_version(map, f->version))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': its initializer kind needs a newer format version",
                    e->t.name);
    switch (e->t.coding) {
    case PC_GRID_RANS:
        return parse_grid(map, e, err, err_len);
    case PC_PERM_RANS:
    case PC_ROW_RANS:
    case PC_BUCKET_RANS:
    case PC_LEVEL_RANS:
        return pc_seed_parse(map, &e->t, f->version, &e->seed, err, err_len);
    default:
        return PC_OK;
    }
}

static int compare_names(const void *a, const void *b) {
    return strcmp((*(const entry *const *)a)->t.name, (*(const entry *const *)b)->t.name);
}

static int names_unique(const pc_file *f) {
    const entry **sorted = malloc(sizeof(entry *) * (f->count ? f->count : 1));
    int ok = sorted != NULL;
    for (size_t i = 0; ok && i < f->count; i++)
        sorted[i] = &f->entries[i];
    if (ok)
        qsort(sorted, f->count, sizeof(entry *), compare_names);
    for (size_t i = 1; ok && i < f->count; i++)
        ok = strcmp(sorted[i - 1]->t.name, sorted[i]->t.name) != 0;
    free(sorted);
    return ok;
}

/* Memory decoding takes: every tensor's bytes plus the largest working set of one. */
static int check_limit(const pc_file *f, uint64_t max_bytes, char *err, size_t err_len) {
    uint64_t total = 0, work = 0;
    for (size_t i = 0; i < f->count; i++) {
        const entry *e = &f->entries[i];
        total += e->t.nbytes;
        if (e->t.coding == PC_GRID_RANS) {
            const uint64_t w = 2 * e->grid.rows * e->grid.m + grid_side_size(e) +
                               ((uint64_t)1 << 16) * e->grid.tables * e->grid.contexts;
            work = w > work ? w : work;
        } else if (e->t.coding != PC_RAW && e->t.coding != PC_RAW_ZSTD) {
            const uint64_t w = pc_seeded_working_bytes(&e->seed.sd);
            work = w > work ? w : work;
        }
    }
    if (total + work > max_bytes)
        return pc_fail(err, err_len, PC_E_LIMIT,
                    "decoding the file's tensors takes %llu bytes, over the limit of %llu "
                    "bytes; raise it with --max-bytes if you trust the file",
                    (unsigned long long)(total + work), (unsigned long long)max_bytes);
    return PC_OK;
}

static int parse_header(pc_file *f, const uint8_t *header, uint64_t h, uint64_t max_bytes,
                        char *err, size_t err_len) {
    pc_mp_doc doc;
    memset(&doc, 0, sizeof doc);
    int rc = pc_mp_parse(header, (size_t)h, MAX_DEPTH, MAX_ITEMS, &doc);
    if (rc == PC_MP_ENOMEM)
        return pc_fail(err, err_len, PC_E_NOMEM, "out of memory reading the header");
    if (rc != 0)
        return pc_fail(err, err_len, PC_E_FORMAT, "the header is not one msgpack object");
    const pc_mp_value *root = doc.root, *tensors = pc_mp_get(root, "tensors");
    rc = PC_OK;
    if (root->type != PC_MP_MAP || !keys_are_strings(root) ||
        !pc_mp_str_eq(pc_mp_get(root, "byteorder"), "little"))
        rc = pc_fail(err, err_len, PC_E_FORMAT, "the header is not a little-endian map");
    else if (tensors == NULL || tensors->type != PC_MP_ARRAY || tensors->v.a.len > PC_MAX_TENSORS)
        rc = pc_fail(err, err_len, PC_E_FORMAT, "the header has no tensor table");
    if (rc == PC_OK) {
        f->count = tensors->v.a.len;
        f->entries = calloc(f->count ? f->count : 1, sizeof(entry));
        f->names = malloc((size_t)h + 1); /* names are shorter than the header */
        if (f->entries == NULL || f->names == NULL)
            rc = pc_fail(err, err_len, PC_E_NOMEM, "out of memory reading the header");
    }
    char *name_at = f->names;
    uint64_t end = 0;
    for (size_t i = 0; rc == PC_OK && i < f->count; i++)
        rc = parse_entry(f, &tensors->v.a.items[i], &f->entries[i], &name_at, &end, err,
                         err_len);
    if (rc == PC_OK && !names_unique(f))
        rc = pc_fail(err, err_len, PC_E_FORMAT, "two tensors share a name");
    if (rc == PC_OK)
        rc = check_limit(f, max_bytes, err, err_len);
    pc_mp_free(&doc);
    return rc;
}

/* ------------------------------------------------------------------ opening */

static int map_file(const char *path, pc_file *f, char *err, size_t err_len) {
    const int fd = open(path, O_RDONLY);
    if (fd < 0)
        return pc_fail(err, err_len, PC_E_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return pc_fail(err, err_len, PC_E_IO, "cannot read %s: not a regular file", path);
    }
    f->size = (size_t)st.st_size;
    if (f->size > 0) {
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return pc_fail(err, err_len, PC_E_IO, "cannot map %s: %s", path, strerror(errno));
        }
        f->data = p;
    }
    close(fd);
    return PC_OK;
}

static int check_preamble(pc_file *f, uint64_t *h, char *err, size_t err_len) {
    if (f->size < 24 || memcmp(f->data, MAGIC, 8) != 0)
        return pc_fail(err, err_len, PC_E_FORMAT, "not a .perm file (bad magic bytes)");
    f->version = pc_le32(f->data + 8);
    if (f->version > PC_FORMAT_VERSION)
        return pc_fail(err, err_len, PC_E_UNSUPPORTED,
                    "format version %u is newer than this decoder's %d", f->version,
                    PC_FORMAT_VERSION);
    if (f->version < 1 || pc_le32(f->data + 12) != 0)
        return pc_fail(err, err_len, PC_E_FORMAT, "bad version or flags");
    *h = pc_le64(f->data + 16);
    if (*h > PC_MAX_HEADER)
        return pc_fail(err, err_len, PC_E_FORMAT, "header length out of range");
    const uint64_t digest = f->version >= 4 ? 16 : 0;
    f->payload_start = (24 + *h + digest + 63) / 64 * 64;
    if (f->payload_start + 32 > f->size)
        return pc_fail(err, err_len, PC_E_FORMAT, "the file is shorter than its header says");
    if (digest && !digest_matches(f->data, 24 + *h, f->data + 24 + *h, 16))
        return pc_fail(err, err_len, PC_E_INTEGRITY, "header digest mismatch: the file is damaged");
    return PC_OK;
}

int pc_open(const char *path, uint64_t max_bytes, int verify_trailer, pc_file **out,
            char *err, size_t err_len) {
    pc_file *f = calloc(1, sizeof(pc_file));
    *out = NULL;
    if (f == NULL)
        return pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    uint64_t h = 0;
    int rc = map_file(path, f, err, err_len);
    if (rc == PC_OK)
        rc = check_preamble(f, &h, err, err_len);
    if (rc == PC_OK)
        rc = parse_header(f, f->data + 24, h, max_bytes ? max_bytes : PC_DEFAULT_MAX_BYTES,
                          err, err_len);
    if (rc == PC_OK && verify_trailer &&
        !digest_matches(f->data, f->size - 32, f->data + f->size - 32, 32))
        rc = pc_fail(err, err_len, PC_E_INTEGRITY, "trailer digest mismatch: the file is damaged");
    if (rc != PC_OK) {
        pc_close(f);
        return rc;
    }
    *out = f;
    return PC_OK;
}

void pc_close(pc_file *f) {
    if (f == NULL)
        return;
    if (f->data != NULL)
        munmap((void *)f->data, f->size);
    for (size_t i = 0; f->entries != NULL && i < f->count; i++)
        pc_seed_free(&f->entries[i].seed);
    free(f->entries);
    free(f->names);
    free(f);
}

uint32_t pc_version(const pc_file *f) { return f->version; }
void pc_set_threads(pc_file *f, int threads) { f->threads = threads > 1 ? threads : 1; }
size_t pc_count(const pc_file *f) { return f->count; }

const pc_tensor *pc_tensor_at(const pc_file *f, size_t i) {
    return i < f->count ? &f->entries[i].t : NULL;
}

long pc_find(const pc_file *f, const char *name) {
    for (size_t i = 0; i < f->count; i++)
        if (strcmp(f->entries[i].t.name, name) == 0)
            return (long)i;
    return -1;
}

/* ------------------------------------------------------------------ codings */

static int check_bools(const entry *e, const uint8_t *out, char *err, size_t err_len) {
    if (e->t.dtype != PC_BOOL)
        return PC_OK;
    for (uint64_t i = 0; i < e->t.numel; i++)
        if (out[i] > 1)
            return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': a bool is not 0 or 1",
                        e->t.name);
    return PC_OK;
}

/* Exactly one zstd frame declaring `size` bytes of content, decompressed into out. */
static int unzstd(const uint8_t *src, size_t len, void *out, uint64_t size, const char *name,
                  const char *what, char *err, size_t err_len) {
    const unsigned long long declared = ZSTD_getFrameContentSize(src, len);
    const size_t frame = ZSTD_findFrameCompressedSize(src, len);
    if (declared != size || ZSTD_isError(frame) || frame != len)
        return pc_fail(err, err_len, PC_E_FORMAT,
                    "tensor '%s': %s is not one zstd frame of the declared size", name, what);
    const size_t got = ZSTD_decompress(out, (size_t)size, src, len);
    if (ZSTD_isError(got) || got != size)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': %s does not decompress", name,
                    what);
    return PC_OK;
}

/* Cast RN32 values to the dtype's storage (6.8), element i of `out`. */
static void store_value(int dtype, float f, uint8_t *out, uint64_t i) {
    if (dtype == PC_FLOAT32) {
        memcpy(out + 4 * i, &f, 4);
    } else if (dtype == PC_FLOAT64) {
        const double d = f;
        memcpy(out + 8 * i, &d, 8);
    } else {
        uint32_t b;
        memcpy(&b, &f, 4);
        const uint16_t h = dtype == PC_FLOAT16 ? pc_half_bits(b) : pc_bfloat16_bits(b);
        memcpy(out + 2 * i, &h, 2);
    }
}

typedef struct {
    float *steps;
    uint8_t *step_of8;
    uint16_t *step_of16;
    uint8_t *group;
    uint16_t *freqs;
    uint32_t *escapes;
    const uint8_t *outliers; /* storage values, in the side buffer */
} grid_side;

/* Split the side frame's content into aligned arrays, checking each (4.6.2). */
static int split_side(const entry *e, const uint8_t *side, grid_side *s, char *err,
                      size_t err_len) {
    const grid_fields *g = &e->grid;
    const uint64_t n_tables = g->tables * g->contexts, n_freqs = n_tables * (g->symbols + 1);
    s->steps = malloc(sizeof(float) * g->steps);
    s->step_of16 = malloc(sizeof(uint16_t) * (g->rows ? g->rows : 1));
    s->group = malloc(g->rows ? g->rows : 1);
    s->freqs = malloc(sizeof(uint16_t) * n_freqs);
    s->escapes = malloc(sizeof(uint32_t) * g->lanes);
    if (!s->steps || !s->step_of16 || !s->group || !s->freqs || !s->escapes)
        return pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    const uint8_t *p = side;
    for (uint64_t i = 0; i < g->steps; i++, p += 4) {
        const uint32_t b = pc_le32(p);
        memcpy(&s->steps[i], &b, 4);
        if (!isfinite(s->steps[i]) || !(s->steps[i] > 0))
            return pc_fail(err, err_len, PC_E_FORMAT,
                        "tensor '%s': grid steps must be finite and positive", e->t.name);
    }
    for (uint64_t r = 0; r < g->rows; r++) {
        s->step_of16[r] = g->steps > 256 ? (uint16_t)(p[0] | p[1] << 8) : p[0];
        p += g->steps > 256 ? 2 : 1;
    }
    for (uint64_t r = 0; r < g->rows; r++) {
        s->group[r] = p[r];
        if (s->step_of16[r] >= g->steps || p[r] >= g->tables)
            return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': a row names a step or table it lacks",
                        e->t.name);
    }
    p += g->rows;
    for (uint64_t t = 0; t < n_tables; t++) {
        uint64_t sum = 0;
        for (uint64_t k = 0; k <= g->symbols; k++, p += 2) {
            s->freqs[t * (g->symbols + 1) + k] = (uint16_t)(p[0] | p[1] << 8);
            sum += s->freqs[t * (g->symbols + 1) + k];
        }
        if (sum != (uint64_t)1 << 15)
            return pc_fail(err, err_len, PC_E_FORMAT,
                        "tensor '%s': a frequency table does not sum to 2**15", e->t.name);
    }
    uint64_t escaped = 0;
    for (uint64_t l = 0; g->outliers && l < g->lanes; l++, p += 4)
        escaped += s->escapes[l] = pc_le32(p);
    if (g->outliers && escaped != g->outliers)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': escapes do not match the outliers",
                    e->t.name);
    if (!g->outliers)
        memset(s->escapes, 0, sizeof(uint32_t) * g->lanes);
    s->outliers = p;
    return PC_OK;
}

static void free_side(grid_side *s) {
    free(s->steps);
    free(s->step_of16);
    free(s->group);
    free(s->freqs);
    free(s->escapes);
}

/* Lane states, segment lengths and words after the side frame (4.5.1, 4.5.2). */
static int split_lanes(const entry *e, const uint8_t *p, uint64_t len, uint64_t **states,
                       uint32_t **lengths, uint32_t **words, char *err, size_t err_len) {
    const grid_fields *g = &e->grid;
    if (len < 12 * g->lanes || (len - 12 * g->lanes) % 4)
        return pc_fail(err, err_len, PC_E_FORMAT,
                    "tensor '%s': payload length does not fit %llu lanes", e->t.name,
                    (unsigned long long)g->lanes);
    const uint64_t n_words = (len - 12 * g->lanes) / 4;
    *states = malloc(sizeof(uint64_t) * g->lanes);
    *lengths = malloc(sizeof(uint32_t) * g->lanes);
    *words = malloc(sizeof(uint32_t) * (n_words ? n_words : 1));
    if (!*states || !*lengths || !*words)
        return pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    uint64_t total = 0;
    for (uint64_t l = 0; l < g->lanes; l++) {
        (*states)[l] = pc_le64(p + 8 * l);  /* checked below: [2**31, 2**63) */
        (*lengths)[l] = pc_le32(p + 8 * g->lanes + 4 * l);
        const uint64_t rows = (l + 1) * g->rows / g->lanes - l * g->rows / g->lanes;
        total += (*lengths)[l];
        if ((*lengths)[l] > rows * g->m)
            return pc_fail(err, err_len, PC_E_FORMAT,
                        "tensor '%s': a lane's segment is longer than its steps", e->t.name);
        if ((*states)[l] < ((uint64_t)1 << 31) || (*states)[l] >= ((uint64_t)1 << 63))
            return pc_fail(err, err_len, PC_E_FORMAT,
                        "tensor '%s': a lane state is outside [2**31, 2**63)", e->t.name);
    }
    if (total != n_words)
        return pc_fail(err, err_len, PC_E_FORMAT,
                    "tensor '%s': segment lengths do not add up to the payload's words",
                    e->t.name);
    for (uint64_t k = 0; k < n_words; k++)
        (*words)[k] = pc_le32(p + 12 * g->lanes + 4 * k);
    return PC_OK;
}

static int stream_status(int status, const char *name, char *err, size_t err_len) {
    switch (status) {
    case PC_GRID_OK:
        return PC_OK;
    case PC_GRID_ENDS_EARLY:
        return pc_fail(err, err_len, PC_E_INTEGRITY, "tensor '%s': coded stream ends early", name);
    case PC_GRID_INCONSISTENT:
        return pc_fail(err, err_len, PC_E_INTEGRITY, "tensor '%s': coded stream is inconsistent",
                    name);
    case PC_GRID_BAD_ESCAPES:
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': escapes do not match the outliers",
                    name);
    default:
        return pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    }
}

/* The symbols of every lane, then their values cast to the dtype, outliers in C order. */
static int grid_symbols_to_values(const entry *e, const grid_side *s, const double *row_steps,
                                  const uint64_t *states, const uint32_t *lengths,
                                  const uint32_t *words, const uint8_t *ctx_of, uint8_t *out,
                                  char *err, size_t err_len) {
    const grid_fields *g = &e->grid;
    const uint64_t n = g->rows * g->m, size = pc_dtype_size(e->t.dtype);
    uint16_t *sym = malloc(sizeof(uint16_t) * (n ? n : 1));
    float *vals = malloc(sizeof(float) * (n ? n : 1));
    int64_t *esc = malloc(sizeof(int64_t) * g->lanes);
    int rc = PC_OK;
    if (!sym || !vals || !esc)
        rc = pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    if (rc == PC_OK)
        rc = stream_status(pc_grid_decode(states, lengths, words, s->group, s->freqs, ctx_of,
                                          (int64_t)g->contexts,
                                          (int64_t)(g->tables * g->contexts),
                                          (int64_t)g->symbols + 1, (int64_t)g->rows,
                                          (int64_t)g->m, (int64_t)g->lanes, sym, esc),
                           e->t.name, err, err_len);
    for (uint64_t l = 0; rc == PC_OK && l < g->lanes; l++)
        if ((uint64_t)esc[l] != s->escapes[l])
            rc = pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': escapes do not match the outliers",
                      e->t.name);
    if (rc == PC_OK) {
        pc_grid_values(sym, (int64_t)g->rows, (int64_t)g->m, row_steps, g->q_lo,
                       (int64_t)g->symbols, vals);
        const uint8_t *next = s->outliers;
        for (uint64_t i = 0; i < n; i++) {
            if (sym[i] == g->symbols) {
                memcpy(out + i * size, next, size);
                next += size;
            } else {
                store_value(e->t.dtype, vals[i], out, i);
            }
        }
    }
    free(sym);
    free(vals);
    free(esc);
    return rc;
}

static int decode_grid(const entry *e, const uint8_t *payload, uint8_t *out, char *err,
                       size_t err_len) {
    const grid_fields *g = &e->grid;
    const uint64_t side_size = grid_side_size(e), n = g->rows * g->m;
    if (g->side > e->length)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': side frame longer than the payload",
                    e->t.name);
    grid_side s;
    memset(&s, 0, sizeof s);
    uint8_t *side = malloc(side_size ? side_size : 1), *ctx_of = malloc(g->symbols + 1);
    double *row_steps = malloc(sizeof(double) * (g->rows ? g->rows : 1));
    uint64_t *states = NULL;
    uint32_t *lengths = NULL, *words = NULL;
    int rc = side && ctx_of && row_steps ? PC_OK : pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    if (rc == PC_OK)
        rc = unzstd(payload, g->side, side, side_size, e->t.name, "the side frame", err, err_len);
    if (rc == PC_OK)
        rc = split_side(e, side, &s, err, err_len);
    if (rc == PC_OK)
        rc = split_lanes(e, payload + g->side, e->length - g->side, &states, &lengths, &words,
                         err, err_len);
    if (rc == PC_OK && n > 0) {
        pc_grid_contexts(g->q_lo, (int64_t)g->symbols, (int64_t)g->contexts, ctx_of);
        for (uint64_t r = 0; r < g->rows; r++)
            row_steps[r] = (double)s.steps[s.step_of16[r]];
        if (e->t.dtype == PC_FLOAT32) {
            int64_t *esc = malloc(sizeof(int64_t) * g->lanes);
            float *outliers = malloc(sizeof(float) * (g->outliers ? g->outliers : 1));
            if (!esc || !outliers) {
                rc = pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
            } else {
                memcpy(outliers, s.outliers, 4 * g->outliers);
                float *values = (float *)(void *)out; /* out is aligned by the caller */
                rc = stream_status(
                    pc_grid_decode_values(states, lengths, words, s.group, s.freqs, ctx_of,
                                          (int64_t)g->contexts,
                                          (int64_t)(g->tables * g->contexts),
                                          (int64_t)g->symbols + 1, (int64_t)g->rows,
                                          (int64_t)g->m, (int64_t)g->lanes, row_steps, g->q_lo,
                                          outliers, s.escapes, values, esc),
                    e->t.name, err, err_len);
            }
            free(esc);
            free(outliers);
        } else {
            rc = grid_symbols_to_values(e, &s, row_steps, states, lengths, words, ctx_of, out,
                                        err, err_len);
        }
    }
    free_side(&s);
    free(side);
    free(ctx_of);
    free(row_steps);
    free(states);
    free(lengths);
    free(words);
    return rc;
}

/* The caller's buffer, for pc_seeded_decode. */
static void *the_buffer(void *out) { return out; }

int pc_decode(pc_file *f, size_t i, void *out, size_t out_len, char *err, size_t err_len) {
    if (i >= f->count)
        return pc_fail(err, err_len, PC_E_ARGUMENT, "no tensor %zu", i);
    const entry *e = &f->entries[i];
    if (out_len < e->t.nbytes || ((uintptr_t)out % 8) != 0)
        return pc_fail(err, err_len, PC_E_ARGUMENT, "tensor '%s': the buffer is too small or unaligned",
                    e->t.name);
    const uint8_t *payload = f->data + f->payload_start + e->offset;
    if (!digest_matches(payload, e->length, e->payload_digest, 16))
        return pc_fail(err, err_len, PC_E_INTEGRITY, "digest mismatch in the payload of tensor '%s'",
                    e->t.name);
    int rc;
    switch (e->t.coding) {
    case PC_RAW:
        rc = e->length == e->t.nbytes
                 ? PC_OK
                 : pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': raw payload of the wrong length",
                        e->t.name);
        if (rc == PC_OK && e->length)
            memcpy(out, payload, e->length);
        break;
    case PC_RAW_ZSTD:
        rc = unzstd(payload, e->length, out, e->t.nbytes, e->t.name, "the payload", err, err_len);
        break;
    case PC_GRID_RANS:
        rc = decode_grid(e, payload, out, err, err_len);
        break;
    default:
        rc = pc_seeded_decode(&e->seed.sd, payload, e->length, the_buffer, out, f->threads, err,
                              err_len);
    }
    if (rc == PC_OK)
        rc = check_bools(e, out, err, err_len);
    if (rc == PC_OK && !digest_matches(out, e->t.nbytes, e->digest, 16))
        rc = pc_fail(err, err_len, PC_E_INTEGRITY, "digest mismatch in decoded tensor '%s'",
                  e->t.name);
    return rc;
}
