# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled (Cython) Philox4x32-10 words, bit-identical to :func:`permcodec.core.philox.words`
and to the numba twin :mod:`permcodec.kernels.philox_numba`."""

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
API = 1


def words(key, uint64_t purpose, int64_t start, int64_t stop):
    """32-bit words ``start..stop-1`` of a stream (0 <= start), as an int64 array."""
    if stop <= start:
        return np.zeros(0, dtype=np.int64)
    if start < 0:
        raise ValueError(f"word index {start} is negative")
    cdef int64_t b0 = start // 4, b1 = (stop + 3) // 4, i
    cdef uint64_t k0 = key[0], k1 = key[1]
    cdef uint64_t c0, c1, c2, c3, p0, p1, key0, key1, block
    cdef int r
    flat_arr = np.empty(4 * (b1 - b0), dtype=np.int64)
    cdef int64_t[::1] flat = flat_arr
    with nogil:
        for i in range(b1 - b0):
            block = <uint64_t>(b0 + i)
            c0 = block & MASK
            c1 = block >> 32
            c2 = <uint64_t>purpose
            c3 = 0
            key0 = k0
            key1 = k1
            for r in range(ROUNDS):
                p0 = <uint64_t>M0 * c0
                p1 = <uint64_t>M1 * c2
                c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ key0, p1 & MASK, (p0 >> 32) ^ c3 ^ key1, p0 & MASK
                key0 = (key0 + W0) & MASK
                key1 = (key1 + W1) & MASK
            flat[4 * i] = <int64_t>c0
            flat[4 * i + 1] = <int64_t>c1
            flat[4 * i + 2] = <int64_t>c2
            flat[4 * i + 3] = <int64_t>c3
    return flat_arr[start - 4 * b0 : stop - 4 * b0]
