# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled (Cython) Philox4x32-10 words, bit-identical to
:func:`permcodec.core.philox.words`: the C of ``csrc/philox.h``, which the native
decoder shares."""

import numpy as np

from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef extern from "philox.h":
    void pc_philox_words(uint32_t k0, uint32_t k1, uint32_t purpose, uint64_t start,
                         uint64_t n, uint32_t *out) nogil


#: The kernel's interface version (see rans_c.API).
API = 3


cdef _words_u32(key, uint64_t purpose, int64_t start, int64_t stop):
    """Words ``start..stop-1`` (0 <= start < stop) as a uint32 array."""
    if start < 0:
        raise ValueError(f"word index {start} is negative")
    if purpose >> 32:
        raise ValueError(f"purpose {purpose} is not a 32-bit word")
    cdef uint32_t k0 = key[0], k1 = key[1]
    cdef uint64_t n = <uint64_t>(stop - start)
    out_arr = np.empty(n, dtype=np.uint32)
    cdef uint32_t[::1] out = out_arr
    with nogil:
        pc_philox_words(k0, k1, <uint32_t>purpose, <uint64_t>start, n, &out[0])
    return out_arr


def uniform(key, uint64_t purpose, int64_t start, int64_t stop, double a, double b):
    """``a + (b - a) * u`` (float64) of the uniforms u = (word + 1/2) 2**-32 of words
    ``start..stop-1``, each operation rounded as numpy rounds it (no fused multiply-add)."""
    if stop <= start:
        return np.zeros(0, dtype=np.float64)
    w_arr = _words_u32(key, purpose, start, stop)
    cdef const uint32_t[::1] w = w_arr
    cdef int64_t i, n = stop - start
    cdef double span = b - a, u
    out_arr = np.empty(n, dtype=np.float64)
    cdef double[::1] out = out_arr
    with nogil:
        for i in range(n):
            u = (<double>w[i] + 0.5) * 2.3283064365386963e-10
            out[i] = a + span * u
    return out_arr


def words(key, uint64_t purpose, int64_t start, int64_t stop):
    """32-bit words ``start..stop-1`` of a stream (0 <= start), as an int64 array."""
    if stop <= start:
        return np.zeros(0, dtype=np.int64)
    return _words_u32(key, purpose, start, stop).astype(np.int64)
