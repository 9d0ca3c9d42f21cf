/* BLAKE2b (RFC 7693): unkeyed hashing with a 1..64 byte digest.
 * Written from the RFC's description; little-endian I/O via byte shifts. */
#include "blake2b.h"

#include <string.h>

#define BLOCK 128

static const uint64_t iv[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL,
    0x3C6EF372FE94F82BULL, 0xA54FF53A5F1D36F1ULL,
    0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL,
    0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL
};

static const uint8_t sigma[12][16] = {
    { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
    { 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3 },
    { 11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4 },
    { 7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8 },
    { 9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13 },
    { 2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9 },
    { 12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11 },
    { 13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10 },
    { 6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5 },
    { 10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0 },
    { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
    { 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3 }
};

static uint64_t load64(const uint8_t *p)
{
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) |
           ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24) |
           ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

static void store64(uint8_t *p, uint64_t x)
{
    int i;
    for (i = 0; i < 8; i++)
        p[i] = (uint8_t)(x >> (8 * i));
}

static uint64_t rotr64(uint64_t x, unsigned n)
{
    return (x >> n) | (x << (64 - n));
}

#define G(a, b, c, d, x, y)                 \
    do {                                    \
        a = a + b + (x);                    \
        d = rotr64(d ^ a, 32);              \
        c = c + d;                          \
        b = rotr64(b ^ c, 24);              \
        a = a + b + (y);                    \
        d = rotr64(d ^ a, 16);              \
        c = c + d;                          \
        b = rotr64(b ^ c, 63);              \
    } while (0)

#define ROUND(r)                                                        \
    do {                                                                \
        const uint8_t *z = sigma[r];                                    \
        G(v0, v4, v8, v12, m[z[0]], m[z[1]]);                           \
        G(v1, v5, v9, v13, m[z[2]], m[z[3]]);                           \
        G(v2, v6, v10, v14, m[z[4]], m[z[5]]);                          \
        G(v3, v7, v11, v15, m[z[6]], m[z[7]]);                          \
        G(v0, v5, v10, v15, m[z[8]], m[z[9]]);                          \
        G(v1, v6, v11, v12, m[z[10]], m[z[11]]);                        \
        G(v2, v7, v8, v13, m[z[12]], m[z[13]]);                         \
        G(v3, v4, v9, v14, m[z[14]], m[z[15]]);                         \
    } while (0)

static void compress(pc_blake2b_state *s, const uint8_t *block, int last)
{
    uint64_t m[16];
    uint64_t v0, v1, v2, v3, v4, v5, v6, v7;
    uint64_t v8, v9, v10, v11, v12, v13, v14, v15;
    int i;

    for (i = 0; i < 16; i++)
        m[i] = load64(block + 8 * i);

    v0 = s->h[0]; v1 = s->h[1]; v2 = s->h[2]; v3 = s->h[3];
    v4 = s->h[4]; v5 = s->h[5]; v6 = s->h[6]; v7 = s->h[7];
    v8 = iv[0]; v9 = iv[1]; v10 = iv[2]; v11 = iv[3];
    v12 = iv[4] ^ s->t[0];
    v13 = iv[5] ^ s->t[1];
    v14 = last ? ~iv[6] : iv[6];
    v15 = iv[7];

    ROUND(0); ROUND(1); ROUND(2); ROUND(3);
    ROUND(4); ROUND(5); ROUND(6); ROUND(7);
    ROUND(8); ROUND(9); ROUND(10); ROUND(11);

    s->h[0] ^= v0 ^ v8;  s->h[1] ^= v1 ^ v9;
    s->h[2] ^= v2 ^ v10; s->h[3] ^= v3 ^ v11;
    s->h[4] ^= v4 ^ v12; s->h[5] ^= v5 ^ v13;
    s->h[6] ^= v6 ^ v14; s->h[7] ^= v7 ^ v15;
}

static void add_count(pc_blake2b_state *s, uint64_t n)
{
    s->t[0] += n;
    if (s->t[0] < n)
        s->t[1]++;
}

int pc_blake2b_init(pc_blake2b_state *s, size_t outlen)
{
    int i;

    if (outlen < 1 || outlen > 64)
        return -1;
    for (i = 0; i < 8; i++)
        s->h[i] = iv[i];
    /* Parameter block word 0: digest length, key length 0, fanout 1, depth 1. */
    s->h[0] ^= 0x01010000ULL ^ (uint64_t)outlen;
    s->t[0] = 0;
    s->t[1] = 0;
    memset(s->buf, 0, sizeof s->buf);
    s->buflen = 0;
    s->outlen = outlen;
    return 0;
}

/* The last block must carry the final flag, so a full buffer is only
 * compressed once more input is known to follow it. */
void pc_blake2b_update(pc_blake2b_state *s, const void *data, size_t len)
{
    const uint8_t *in = (const uint8_t *)data;
    size_t fill;

    if (len == 0)
        return;
    fill = BLOCK - s->buflen;
    if (len > fill) {
        memcpy(s->buf + s->buflen, in, fill);
        in += fill;
        len -= fill;
        add_count(s, BLOCK);
        compress(s, s->buf, 0);
        s->buflen = 0;
        while (len > BLOCK) {
            add_count(s, BLOCK);
            compress(s, in, 0);
            in += BLOCK;
            len -= BLOCK;
        }
    }
    memcpy(s->buf + s->buflen, in, len);
    s->buflen += len;
}

void pc_blake2b_final(pc_blake2b_state *s, uint8_t *out)
{
    uint8_t full[64];
    int i;

    add_count(s, (uint64_t)s->buflen);
    memset(s->buf + s->buflen, 0, BLOCK - s->buflen);
    compress(s, s->buf, 1);
    for (i = 0; i < 8; i++)
        store64(full + 8 * i, s->h[i]);
    memcpy(out, full, s->outlen);
}

int pc_blake2b(const void *data, size_t len, uint8_t *out, size_t outlen)
{
    pc_blake2b_state s;

    if (pc_blake2b_init(&s, outlen) != 0)
        return -1;
    pc_blake2b_update(&s, data, len);
    pc_blake2b_final(&s, out);
    return 0;
}
