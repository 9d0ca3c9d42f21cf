/* BLAKE2b hash (RFC 7693), unkeyed, digest length 1..64 bytes.
 * Portable C99; streaming (init/update/final) and one-call interfaces. */
#ifndef PC_BLAKE2B_H
#define PC_BLAKE2B_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t h[8];
    uint64_t t[2];      /* bytes hashed so far (128-bit counter) */
    uint8_t buf[128];
    size_t buflen;
    size_t outlen;
} pc_blake2b_state;

/* Unkeyed BLAKE2b with digest length outlen (1..64) set in the parameter block (NOT a truncated BLAKE2b-512). Returns 0, or -1 if outlen is out of range. */
int pc_blake2b_init(pc_blake2b_state *s, size_t outlen);
void pc_blake2b_update(pc_blake2b_state *s, const void *data, size_t len);
void pc_blake2b_final(pc_blake2b_state *s, uint8_t *out); /* writes outlen bytes */
/* One call: the digest of data[0..len) */
int pc_blake2b(const void *data, size_t len, uint8_t *out, size_t outlen);

#endif
