/* What the native decoder's own modules share: one-line errors and the msgpack lookups.
 * Not part of the library's interface (permfile.h).
 */
#ifndef PERMCODEC_INTERNAL_H
#define PERMCODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mpack.h"
#include "perm_format.h"

/* Write a one-line message to err (if not NULL) and return status. */
int pc_fail(char *err, size_t err_len, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* pc_le32 and pc_le64 are csrc/perm_format.h's. */

/* A msgpack integer (never a bool) in [0, limit), into *out; 0 if it is not one. */
int pc_get_uint(const pc_mp_value *map, const char *key, uint64_t limit, uint64_t *out);

#endif
