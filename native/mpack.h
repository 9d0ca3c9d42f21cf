/* A small msgpack reader for untrusted input (a file header of up to 64 MiB).
 *
 * pc_mp_parse turns one msgpack object into a tree of pc_mp_value nodes that live in
 * an arena owned by the pc_mp_doc; STR and BIN nodes point into the input buffer, so
 * the buffer must outlive the doc. Ext types and the reserved byte 0xc1 are rejected.
 * Every declared length is checked against the bytes left before anything is allocated.
 */
#ifndef PERMCODEC_MPACK_H
#define PERMCODEC_MPACK_H

#include <stddef.h>
#include <stdint.h>

#define PC_MP_ETRUNC (-1)   /* truncated input */
#define PC_MP_ETRAIL (-2)   /* bytes after the object */
#define PC_MP_EBADTYPE (-3) /* reserved byte 0xc1, or an ext type */
#define PC_MP_EDEPTH (-4)   /* containers nested deeper than max_depth */
#define PC_MP_ENOMEM (-5)   /* allocation failed, or more than max_items values */
#define PC_MP_EUTF8 (-6)    /* a str that is not valid UTF-8 */

typedef enum { PC_MP_NIL, PC_MP_BOOL, PC_MP_UINT, PC_MP_INT, PC_MP_FLOAT, PC_MP_STR, PC_MP_BIN,
               PC_MP_ARRAY, PC_MP_MAP } pc_mp_type;

typedef struct pc_mp_value pc_mp_value;
struct pc_mp_value {
    pc_mp_type type;
    union {
        int b;            /* BOOL */
        uint64_t u;       /* UINT: every non-negative integer, whatever its encoding (positive fixint, uint8..64, and int8..64 holding a value >= 0) */
        int64_t i;        /* INT: negative integers only */
        double f;         /* FLOAT: float 64, or float 32 converted exactly to double */
        struct { const uint8_t *ptr; uint32_t len; } s;   /* STR and BIN: points into the input buffer */
        struct { pc_mp_value *items; uint32_t len; } a;   /* ARRAY: len items; MAP: 2*len items, key then value */
    } v;
};

typedef struct {
    pc_mp_value *root;
    /* private: an arena the tree lives in */
    void *arena;
} pc_mp_doc;

/* Parse exactly one msgpack object filling buf[0..len) (trailing bytes are an error).
   Returns 0 and fills doc, or a negative error code:
   PC_MP_ETRUNC (-1) truncated input, PC_MP_ETRAIL (-2) bytes after the object,
   PC_MP_EBADTYPE (-3) a reserved byte 0xc1 or an ext type (ext is not allowed),
   PC_MP_EDEPTH (-4) nesting deeper than max_depth, PC_MP_ENOMEM (-5) allocation failed or
   more than max_items values in total, PC_MP_EUTF8 (-6) a str that is not valid UTF-8.
   Depth counts containers: a scalar root has depth 0, a root array or map depth 1, its
   container children depth 2, and so on (so max_depth 0 allows no container at all).
   Every value counts towards max_items, the root and each map key included.
   The first error met in reading order is reported. On error doc is left zeroed (root
   NULL, nothing to free, though pc_mp_free is still safe). An empty or empty-container
   value has items == NULL and len == 0; an empty STR or BIN has a non-NULL ptr unless
   buf is NULL. buf may be NULL only when len is 0; doc must not be NULL
   (PC_MP_ENOMEM is returned if it is). */
int pc_mp_parse(const uint8_t *buf, size_t len, int max_depth, size_t max_items, pc_mp_doc *doc);

/* Free everything pc_mp_parse allocated and zero doc. Safe on a zeroed doc, a doc whose
   parse failed, a doc already freed, and NULL. */
void pc_mp_free(pc_mp_doc *doc);

/* Helpers: the value of str key `key` in MAP `map` (the last match, as a dict built from the map keeps), or NULL if absent or map is not a MAP. */
const pc_mp_value *pc_mp_get(const pc_mp_value *map, const char *key);
/* 1 if v is a STR equal to the NUL-terminated s. */
int pc_mp_str_eq(const pc_mp_value *v, const char *s);

#endif /* PERMCODEC_MPACK_H */
