# cython: language_level=3, boundscheck=False, wraparound=False
"""LaPerm's sync on CPU float32 rows in C (csrc/laperm_sync.c): pack each weight's key
and index, (numpy sorts the words), place the initial values by rank; the same result as
``torch.argsort(stable=True)`` and a scatter. Used by :mod:`permcodec.laperm.sync`."""

import numpy as np

from libc.stdint cimport int64_t, uint32_t

cdef extern from "laperm_sync.h":
    int64_t PC_SYNC_MAX_M
    int pc_sync_index_bits(int64_t m)
    int pc_sync_pack(const float *w, int64_t rows, int64_t m, int b, uint32_t *out) nogil
    int pc_sync_place(const uint32_t *packed, int64_t rows, int64_t m, int b,
                      const float *sorted_init, float *w) nogil

#: The kernel's interface version (see rans_c.API).
API = 3
#: Rows longer than this leave too few key bits beside the index; they use torch.
MAX_M = PC_SYNC_MAX_M


def index_bits(int64_t m):
    """Bits that hold an index below m."""
    return pc_sync_index_bits(m)


def pack(const float[:, ::1] w, int b):
    """Per weight, uint32 (high bits of its key | its index); False on NaN."""
    out = np.empty((w.shape[0], w.shape[1]), dtype=np.uint32)
    cdef uint32_t[:, ::1] o = out
    cdef int ok = 1
    if w.shape[0] and w.shape[1]:
        with nogil:
            ok = pc_sync_pack(&w[0, 0], w.shape[0], w.shape[1], b, &o[0, 0])
    return out, bool(ok)


def place(const uint32_t[:, ::1] packed_sorted, int b, const float[:, ::1] sorted_init,
          float[:, ::1] w):
    """w[r, index of the k-th smallest] = sorted_init[r, k], each row of packed_sorted
    sorted."""
    cdef int ok = 1
    if w.shape[0] and w.shape[1]:
        with nogil:
            ok = pc_sync_place(&packed_sorted[0, 0], w.shape[0], w.shape[1], b,
                               &sorted_init[0, 0], &w[0, 0])
    if not ok:
        raise MemoryError("LaPerm's sync: no memory for its scratch")
