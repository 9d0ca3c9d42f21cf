/* What the native decoder's own modules share: one-line errors and little-endian reads.
 * Not part of the library's interface (permfile.h).
 */
#ifndef PERMCODEC_INTERNAL_H
#define PERMCODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mpack.h"

/* Write a one-line message to err (if not NULL) and return status. */
int pc_fail(char *err, size_t err_len, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static inline uint32_t pc_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t pc_le64(const uint8_t *p) {
    return (uint64_t)pc_le32(p) | (uint64_t)pc_le32(p + 4) << 32;
}

/* A msgpack integer (never a bool) in [0, limit), into *out; 0 if it is not one. */
int pc_get_uint(const pc_mp_value *map, const char *key, uint64_t limit, uint64_t *out);

#endif
