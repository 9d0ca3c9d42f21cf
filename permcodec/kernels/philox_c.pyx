# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled (Cython) Philox4x32-10 words, bit-identical to
:func:`permcodec.core.philox.words`."""

import numpy as np

from libc.stdint cimport int64_t, uint64_t

cdef extern from *:
    """
    #include <stdint.h>
    #define PC_M0 (((uint64_t)0xD2511F53))
    #define PC_M1 (((uint64_t)0xCD9E8D57))
    #define PC_W0 (((uint64_t)0x9E3779B9))
    #define PC_W1 (((uint64_t)0xBB67AE85))
    #define PC_MASK (((uint64_t)0xFFFFFFFF))
    #define PC_ROUNDS (((int64_t)10))
    """
    uint64_t M0 "PC_M0"
    uint64_t M1 "PC_M1"
    uint64_t W0 "PC_W0"
    uint64_t W1 "PC_W1"
    uint64_t MASK "PC_MASK"
    int64_t ROUNDS "PC_ROUNDS"




#: The kernel's interface version (see rans_c.API).
API = 2


cdef inline void _block(uint64_t block, uint64_t purpose, uint64_t k0, uint64_t k1,
                        uint64_t* out) noexcept nogil:
    """The four words of one Philox block."""
    cdef uint64_t c0 = block & MASK, c1 = block >> 32, c2 = purpose, c3 = 0, p0, p1
    cdef uint64_t key0 = k0, key1 = k1
    cdef int r
    for r in range(ROUNDS):
        p0 = <uint64_t>M0 * c0
        p1 = <uint64_t>M1 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ key0, p1 & MASK, (p0 >> 32) ^ c3 ^ key1, p0 & MASK
        key0 = (key0 + W0) & MASK
        key1 = (key1 + W1) & MASK
    out[0] = c0
    out[1] = c1
    out[2] = c2
    out[3] = c3


def uniform(key, uint64_t purpose, int64_t start, int64_t stop, double a, double b):
    """``a + (b - a) * u`` (float64) of the uniforms u = (word + 1/2) 2**-32 of words
    ``start..stop-1``, each operation rounded as numpy rounds it (no fused multiply-add)."""
    if stop <= start:
        return np.zeros(0, dtype=np.float64)
    if start < 0:
        raise ValueError(f"word index {start} is negative")
    cdef int64_t i, n = stop - start, idx
    cdef uint64_t k0 = key[0], k1 = key[1], blk = <uint64_t>(start // 4)
    cdef uint64_t w[4]
    cdef double span = b - a, u
    out_arr = np.empty(n, dtype=np.float64)
    cdef double[::1] out = out_arr
    with nogil:
        _block(blk, purpose, k0, k1, w)
        for i in range(n):
            idx = (start + i) & 3
            if idx == 0 and i:
                blk += 1
                _block(blk, purpose, k0, k1, w)
            u = (<double>w[idx] + 0.5) * 2.3283064365386963e-10
            out[i] = a + span * u
    return out_arr


def words(key, uint64_t purpose, int64_t start, int64_t stop):
    """32-bit words ``start..stop-1`` of a stream (0 <= start), as an int64 array."""
    if stop <= start:
        return np.zeros(0, dtype=np.int64)
    if start < 0:
        raise ValueError(f"word index {start} is negative")
    cdef int64_t b0 = start // 4, b1 = (stop + 3) // 4, i
    cdef uint64_t k0 = key[0], k1 = key[1]
    cdef uint64_t w[4]
    flat_arr = np.empty(4 * (b1 - b0), dtype=np.int64)
    cdef int64_t[::1] flat = flat_arr
    with nogil:
        for i in range(b1 - b0):
            _block(<uint64_t>(b0 + i), purpose, k0, k1, w)
            flat[4 * i] = <int64_t>w[0]
            flat[4 * i + 1] = <int64_t>w[1]
            flat[4 * i + 2] = <int64_t>w[2]
            flat[4 * i + 3] = <int64_t>w[3]
    return flat_arr[start - 4 * b0 : stop - 4 * b0]
