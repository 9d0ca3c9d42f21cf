# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled rANS kernels of the seeded codings (the C of ``csrc/multiset.c``), bit-identical
to the numpy reference of :mod:`permcodec.coding.rans`, behind the input checks of
:mod:`.rans_host`. All arithmetic is exact 64-bit integer arithmetic: states live in
[2**31, 2**63), probabilities in 31 bits, and no product leaves 63 bits. These wrappers
convert the arguments, allocate the results and call the C with the GIL released, so
runs of lanes decode side by side on threads.
"""

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy

cdef extern from "multiset.h":
    int PC_MS_OK
    int PC_MS_FALLBACK
    int PC_MS_NO_MEMORY
    int PC_MS_RECIP_SIZE
    void pc_ms_recip_fill(uint64_t *table) nogil
    int pc_ms_levels(int64_t k) nogil
    int pc_ms_left_counts(int64_t m, int32_t *tree) nogil
    int pc_ms_decode_rows(int64_t *x, int64_t lanes, const int64_t *starts,
                          const uint32_t *words, const int64_t *counts, int64_t counts_stride,
                          int64_t n, const uint8_t *distinct, const int64_t *bounds, int64_t m,
                          int final, const uint64_t *recip, int64_t *out, int64_t out_stride,
                          int64_t *status, int64_t *used) nogil
    int pc_ms_decode_mixed(int64_t *x, int64_t lanes, const uint32_t *words, int64_t n_words,
                           const int64_t *counts, int64_t counts_stride, int64_t rows,
                           int64_t n, const uint8_t *distinct, int64_t m, int final,
                           const uint64_t *recip, int64_t *code, int64_t *pos) nogil
    int pc_ms_lehmer_to_classes(const int64_t *code, int64_t rows, int64_t m, int64_t lanes,
                                const uint8_t *distinct, int64_t *out,
                                int64_t out_stride) nogil
    int pc_ms_decode(int64_t *x, int64_t lanes, const uint32_t *words, int64_t n_words,
                     const int64_t *counts, int64_t counts_stride, int64_t rows, int64_t n,
                     const int64_t *totals, int64_t totals_stride, int64_t m, int final,
                     const uint64_t *recip, int64_t *out, int64_t out_stride,
                     int64_t *pos) nogil
    int pc_ms_decode_ctx(int64_t *x, int64_t lanes, const uint32_t *words, int64_t n_words,
                         const int64_t *ctx, int64_t ctx_stride, const int64_t *counts,
                         int64_t counts_stride, int64_t rows, int64_t k, int64_t m,
                         const int64_t *weights, int final, int64_t *out, int64_t out_stride,
                         int64_t *pos) nogil
    void pc_ms_count_classes(const int64_t *packed, int64_t packed_stride, int64_t rows,
                             int64_t m, int64_t *most, int64_t *fewest) nogil
    int pc_ms_init_buckets(const int64_t *packed, int64_t packed_stride, int64_t rows,
                           int64_t m, int64_t k, int64_t *counts, int64_t counts_stride,
                           int64_t n, int64_t *first, int64_t first_stride, int64_t *ctx,
                           int64_t ctx_stride, int64_t *per_bucket,
                           int64_t per_bucket_stride) nogil
    int pc_ms_place_refined(const int64_t *seq, int64_t seq_stride, const int64_t *sym,
                            int64_t sym_stride, int64_t rows, int64_t m, const void *values,
                            int64_t values_stride, int64_t n, int width, int64_t k, void *out,
                            int64_t out_stride) nogil
    int pc_ms_encode_rows(const int64_t *cls, int64_t cls_stride, const int64_t *counts,
                          int64_t counts_stride, int64_t n, const uint8_t *distinct,
                          const int64_t *bounds, int64_t lanes, int64_t m, int64_t *x,
                          int64_t *seg, uint32_t *buf) nogil
    int pc_ms_encode(const int64_t *cls, int64_t cls_stride, int64_t rows, int64_t m,
                     const int64_t *counts, int64_t counts_stride, int64_t n,
                     const int64_t *totals, int64_t totals_stride, int64_t lanes,
                     int64_t capacity, int64_t *x, uint32_t **words, int64_t *n_words) nogil
    int pc_ms_encode_ctx(const int64_t *sym, int64_t sym_stride, const int64_t *ctx,
                         int64_t ctx_stride, int64_t rows, int64_t m, const int64_t *counts,
                         int64_t counts_stride, int64_t k, const int64_t *weights,
                         int64_t lanes, int64_t capacity, int64_t *x, uint32_t **words,
                         int64_t *n_words) nogil


#: The kernels' interface version: kernels.load refuses an extension built from another
#: (a stale in-place build), which would fail only when called.
API = 3

# The table of reciprocals the decoders divide by, made once (512 KiB) and shared.
_RECIP = np.empty(PC_MS_RECIP_SIZE, dtype=np.uint64)
cdef uint64_t[::1] _recip_view = _RECIP
pc_ms_recip_fill(&_recip_view[0])
cdef const uint64_t* RECIP = &_recip_view[0]


cdef inline const uint32_t* _words(const uint32_t[::1] words) noexcept:
    return &words[0] if words.shape[0] else NULL


cdef int _raise_for(int status) except -1:
    """Python's error for the statuses that are not the reference's."""
    if status == PC_MS_NO_MEMORY:
        raise MemoryError("out of memory for the rANS kernels' scratch")
    if status == PC_MS_FALLBACK:
        raise ValueError("rows of more than 2**31 values are beyond the rANS kernels")
    return 0


def _levels(int64_t k):
    return pc_ms_levels(k)


def _left_counts(int64_t m):
    """Implicit binary tree over m leaves (padded to 2**levels): entry n of node n holds
    how many real leaves its left subtree has. Returns (tree, levels)."""
    cdef int levels = pc_ms_levels(m)
    tree_arr = np.zeros(<int64_t>1 << levels, dtype=np.int32)
    cdef int32_t[::1] tree = tree_arr
    pc_ms_left_counts(m, &tree[0])
    return tree_arr, levels


# ---------------------------------------------------------------- decoders


def decode_rows_kernel(int64_t[::1] x, const int64_t[::1] starts, const uint32_t[::1] words,
                       const int64_t[:, ::1] counts, distinct, const int64_t[::1] bounds,
                       int64_t m, bint final):
    """Lanes of a ``row-rans`` stream: (classes (R, m), lane statuses, words used)."""
    cdef Py_ssize_t lanes = x.shape[0], n = counts.shape[1]
    out_arr = np.zeros((counts.shape[0], m), dtype=np.int64)
    status_arr = np.zeros(lanes, dtype=np.int64)
    used_arr = np.zeros(lanes, dtype=np.int64)
    cdef int64_t[:, ::1] out = out_arr
    cdef int64_t[::1] status = status_arr
    cdef int64_t[::1] used = used_arr
    cdef const uint8_t[::1] dist = np.ascontiguousarray(distinct, dtype=np.uint8)
    cdef const uint32_t* w = _words(words)
    cdef int rc
    with nogil:
        rc = pc_ms_decode_rows(&x[0], lanes, &starts[0], w, &counts[0, 0], n, n, &dist[0],
                               &bounds[0], m, final, RECIP, &out[0, 0], m, &status[0],
                               &used[0])
    _raise_for(rc)
    return out_arr, status_arr, used_arr


def decode_mixed_kernel(int64_t[::1] x, const uint32_t[::1] words,
                        const int64_t[:, ::1] counts, distinct, int64_t m, bint final):
    """Multiset decoder without totals over groups of lanes: (code (G, m, lanes),
    status, words used); distinct rows hold Lehmer digits."""
    cdef Py_ssize_t rows = counts.shape[0], n = counts.shape[1], lanes = x.shape[0]
    out_arr = np.zeros(((rows + lanes - 1) // lanes, m, lanes), dtype=np.int64)
    cdef int64_t[:, :, ::1] out = out_arr
    cdef const uint8_t[::1] dist = np.ascontiguousarray(distinct, dtype=np.uint8)
    cdef const uint32_t* w = _words(words)
    cdef int64_t pos = 0
    cdef int status
    with nogil:
        status = pc_ms_decode_mixed(&x[0], lanes, w, words.shape[0], &counts[0, 0], n, rows,
                                    n, &dist[0], m, final, RECIP, &out[0, 0, 0], &pos)
    _raise_for(status)
    return out_arr, status, pos


def lehmer_to_classes(code_arr, distinct):
    """Class indices (rows, m) from the (groups, m, lanes) output of the mixed decoder."""
    cdef const int64_t[:, :, ::1] code = code_arr
    cdef const uint8_t[::1] dist = np.ascontiguousarray(distinct, dtype=np.uint8)
    cdef Py_ssize_t m = code.shape[1], lanes = code.shape[2], rows = dist.shape[0]
    out_arr = np.empty((rows, m), dtype=np.int64)
    cdef int64_t[:, ::1] out = out_arr
    cdef int status
    with nogil:
        status = pc_ms_lehmer_to_classes(&code[0, 0, 0], rows, m, lanes, &dist[0],
                                         &out[0, 0], m)
    _raise_for(status)
    return out_arr


def decode_kernel(int64_t[::1] x, const uint32_t[::1] words, const int64_t[:, ::1] counts,
                  const int64_t[:, ::1] totals, bint has_totals, int64_t m, int64_t top,
                  bint final):
    """Multiset decoder over groups of lockstep lanes (segment totals allowed): (classes
    (R, m), status, words used). The class of a step is the reference's Fenwick search
    (the most classes whose counts sum to at most the scaled state, at most n - 1),
    found by one descent of a tree of left-subtree counts per lane, which takes the
    value on its way down; ``top`` is unused (the Fenwick search's first step)."""
    cdef Py_ssize_t rows = counts.shape[0], n = counts.shape[1], lanes = x.shape[0]
    out_arr = np.empty((rows, m), dtype=np.int64)
    cdef int64_t[:, ::1] out = out_arr
    cdef const int64_t* tot = &totals[0, 0] if has_totals else NULL
    cdef const uint32_t* w = _words(words)
    cdef int64_t pos = 0
    cdef int status
    with nogil:
        status = pc_ms_decode(&x[0], lanes, w, words.shape[0], &counts[0, 0], n, rows, n, tot,
                              totals.shape[1], m, final, RECIP, &out[0, 0], m, &pos)
    _raise_for(status)
    return out_arr, status, pos


def decode_ctx_kernel(int64_t[::1] x, const uint32_t[::1] words, const int64_t[:, ::1] ctx,
                      const int64_t[:, ::1] counts, const int64_t[::1] weights, bint final):
    """Context model decoder: (symbols (R, m), status, words used)."""
    cdef Py_ssize_t rows = counts.shape[0], k = counts.shape[1], m = ctx.shape[1]
    out_arr = np.empty((rows, m), dtype=np.int64)
    cdef int64_t[:, ::1] out = out_arr
    cdef const uint32_t* w = _words(words)
    cdef int64_t pos = 0
    cdef int status
    with nogil:
        status = pc_ms_decode_ctx(&x[0], x.shape[0], w, words.shape[0], &ctx[0, 0], m,
                                  &counts[0, 0], k, rows, k, m, &weights[0], final,
                                  &out[0, 0], m, &pos)
    _raise_for(status)
    return out_arr, status, pos


# ---------------------------------------------------------------- buckets


def init_buckets_kernel(const int64_t[:, ::1] packed, int64_t k):
    """From each init row's sorted (order key << 32 | position) words: the counts of its
    classes (R, N; N the most classes of a row, padded with zeros), the sorted position
    of each class's first value (R, N), the bucket of each position's initial value
    (R, m; bucket floor(first rank * k / m) of its class) and the values per bucket
    (R, k): what :func:`permcodec.coding.arrangement.init_classes` and
    :func:`permcodec.coding.buckets.bucketize` give a decoder, in two passes. None if
    a position is out of range."""
    cdef Py_ssize_t rows = packed.shape[0], m = packed.shape[1]
    cdef int64_t n = 0, fewest = m
    cdef int status
    with nogil:
        pc_ms_count_classes(&packed[0, 0], m, rows, m, &n, &fewest)
    counts_arr = np.empty((rows, n), dtype=np.int64)
    first_arr = np.empty((rows, n), dtype=np.int64)
    ctx_arr = np.empty((rows, m), dtype=np.int64)
    per_bucket_arr = np.empty((rows, k), dtype=np.int64)
    cdef int64_t[:, ::1] counts = counts_arr
    cdef int64_t[:, ::1] first = first_arr
    cdef int64_t[:, ::1] ctx = ctx_arr
    cdef int64_t[:, ::1] per_bucket = per_bucket_arr
    with nogil:
        status = pc_ms_init_buckets(&packed[0, 0], m, rows, m, k, &counts[0, 0], n, n,
                                    &first[0, 0], n, &ctx[0, 0], m, &per_bucket[0, 0], k)
    if status != PC_MS_OK:
        return None
    return counts_arr, first_arr, ctx_arr, per_bucket_arr, fewest == m


def place_refined_kernel(const int64_t[:, ::1] seq, const int64_t[:, ::1] sym, values,
                         int64_t k):
    """Rows of values (as words of 2, 4 or 8 bytes) from a bucket-major refinement: the
    positions of bucket b, in ascending order, take the classes of its part of ``seq``
    in turn, and each position its class's value. None if a symbol or class is out of
    range (the numpy reference then decides)."""
    vals = np.ascontiguousarray(values)
    cdef Py_ssize_t rows = seq.shape[0], m = seq.shape[1], n = vals.shape[1]
    cdef int width = vals.dtype.itemsize
    out_arr = np.empty((rows, m), dtype=vals.dtype)
    cdef const uint8_t[:, ::1] vb = vals.view(np.uint8)
    cdef uint8_t[:, ::1] ob = out_arr.view(np.uint8)
    cdef int status
    with nogil:
        status = pc_ms_place_refined(&seq[0, 0], m, &sym[0, 0], m, rows, m, &vb[0, 0], n, n,
                                     width, k, &ob[0, 0], m)
    _raise_for(status if status != PC_MS_FALLBACK else PC_MS_OK)
    return None if status != PC_MS_OK else out_arr


# ---------------------------------------------------------------- encoders


def encode_rows_kernel(const int64_t[:, ::1] cls, const int64_t[:, ::1] counts, distinct,
                       const int64_t[::1] bounds):
    """Encoder of ``row-rans``: (states, segment starts in ``buf``, buf, ok)."""
    cdef Py_ssize_t rows = cls.shape[0], m = cls.shape[1], n = counts.shape[1]
    cdef Py_ssize_t lanes = bounds.shape[0] - 1
    buf_arr = np.empty(rows * m, dtype=np.uint32)
    x_arr = np.empty(lanes, dtype=np.int64)
    seg_arr = np.empty(lanes, dtype=np.int64)
    cdef uint32_t[::1] buf = buf_arr
    cdef int64_t[::1] xs = x_arr
    cdef int64_t[::1] seg = seg_arr
    cdef const uint8_t[::1] dist = np.ascontiguousarray(distinct, dtype=np.uint8)
    cdef int status
    with nogil:
        status = pc_ms_encode_rows(&cls[0, 0], m, &counts[0, 0], n, n, &dist[0], &bounds[0],
                                   lanes, m, &xs[0], &seg[0], &buf[0])
    _raise_for(status if status != PC_MS_FALLBACK else PC_MS_OK)
    return x_arr, seg_arr, buf_arr, status == PC_MS_OK


cdef object _words_out(int status, uint32_t* words, int64_t n_words):
    """The encoder's words as a numpy array (freeing them); none unless ``status`` is OK."""
    try:
        out_arr = np.empty(n_words if status == PC_MS_OK else 0, dtype=np.uint32)
        if status == PC_MS_OK and n_words:
            memcpy(<void*><size_t>out_arr.ctypes.data, words, n_words * sizeof(uint32_t))
    finally:
        free(words)
    return out_arr


def encode_kernel(const int64_t[:, ::1] cls, const int64_t[:, ::1] counts,
                  const int64_t[:, ::1] totals, bint has_totals, int64_t lanes,
                  int64_t capacity):
    """Multiset model encoder over groups of lanes: (states, words, status); where memory
    runs out the status is FALLBACK (the reference decides)."""
    cdef Py_ssize_t rows = cls.shape[0], m = cls.shape[1], n = counts.shape[1]
    x_arr = np.empty(lanes, dtype=np.int64)
    cdef int64_t[::1] x = x_arr
    cdef const int64_t* tot = &totals[0, 0] if has_totals else NULL
    cdef uint32_t* words = NULL
    cdef int64_t n_words = 0
    cdef int status
    with nogil:
        status = pc_ms_encode(&cls[0, 0], m, rows, m, &counts[0, 0], n, n, tot,
                              totals.shape[1], lanes, capacity, &x[0], &words, &n_words)
    if status == PC_MS_NO_MEMORY:
        status = PC_MS_FALLBACK
    return x_arr, _words_out(status, words, n_words), status


def encode_ctx_kernel(const int64_t[:, ::1] sym, const int64_t[:, ::1] ctx,
                      const int64_t[:, ::1] counts, const int64_t[::1] weights, int64_t lanes,
                      int64_t capacity):
    """Context model encoder over groups of lanes: (states, words, status); where memory
    runs out the status is FALLBACK (the reference decides)."""
    cdef Py_ssize_t rows = sym.shape[0], m = sym.shape[1], k = counts.shape[1]
    x_arr = np.empty(lanes, dtype=np.int64)
    cdef int64_t[::1] x = x_arr
    cdef uint32_t* words = NULL
    cdef int64_t n_words = 0
    cdef int status
    with nogil:
        status = pc_ms_encode_ctx(&sym[0, 0], m, &ctx[0, 0], m, rows, m, &counts[0, 0], k, k,
                                  &weights[0], lanes, capacity, &x[0], &words, &n_words)
    if status == PC_MS_NO_MEMORY:
        status = PC_MS_FALLBACK
    return x_arr, _words_out(status, words, n_words), status
