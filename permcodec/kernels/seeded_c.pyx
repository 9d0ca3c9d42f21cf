# cython: language_level=3, boundscheck=False, wraparound=False
"""The whole decode of a seeded tensor (``perm-rans``, ``row-rans``, ``bucket-rans``) in C,
the GIL released: csrc/seeded_decode.c, which the native decoder runs too, bit for bit
with the numpy reference of :mod:`permcodec.coding`. The caller has checked the entry's
fields (:mod:`permcodec.coding.base`); this module turns them into the C record and the
C statuses into (array, status, message).
"""

import numpy as np

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "level_rans.h":
    int64_t pc_level_encode(const uint16_t *sym, const uint16_t *ctx, const uint16_t *freqs,
                            uint64_t classes, uint64_t rows, uint64_t m, uint64_t lanes,
                            uint64_t *states, uint32_t *lengths, uint32_t *words) nogil

cdef extern from "seeded_decode.h":
    ctypedef struct pc_init_spec:
        int kind
        int64_t spec_version
        double a, b, mean, std, gain, value, low, high, p, levels, scale
        int mode_fan_out, random_sign
        const double *knots
        size_t n_knots
        double density
        int tensor_granularity
        uint64_t fan_in, fan_out

    ctypedef struct pc_seeded:
        const char *name
        int coding, dtype
        pc_init_spec spec
        uint32_t k0, k1
        uint64_t rows, m, lanes
        int bits, exact, has_words
        const int64_t *weights
        uint64_t words, refine_lanes

    ctypedef void *(*pc_output_fn)(void *ctx) noexcept
    int pc_init_kind(const char *name, size_t len)
    int pc_seeded_decode(const pc_seeded *s, const uint8_t *payload, uint64_t length,
                         pc_output_fn out, void *out_ctx, int threads, char *err,
                         size_t err_len) nogil
    int PC_OK, PC_E_FORMAT, PC_E_INTEGRITY, PC_E_NOMEM, PC_E_UNSUPPORTED
    int PC_PERM_RANS, PC_ROW_RANS, PC_BUCKET_RANS, PC_LEVEL_RANS
    int PC_FLOAT64, PC_FLOAT32, PC_FLOAT16, PC_BFLOAT16

#: The kernel's interface version (see rans_c.API).
API = 3

OK, FORMAT, INTEGRITY, NO_MEMORY, UNSUPPORTED = (
    PC_OK, PC_E_FORMAT, PC_E_INTEGRITY, PC_E_NOMEM, PC_E_UNSUPPORTED
)
_CODINGS = {"perm-rans": PC_PERM_RANS, "row-rans": PC_ROW_RANS, "bucket-rans": PC_BUCKET_RANS,
            "level-rans": PC_LEVEL_RANS}
_DTYPES = {"float64": PC_FLOAT64, "float32": PC_FLOAT32, "float16": PC_FLOAT16,
           "bfloat16": PC_BFLOAT16}
_PARAMS = ("a", "b", "mean", "std", "gain", "value", "low", "high", "p", "levels", "scale")


cdef void *_output(void *ctx) noexcept with gil:
    """The output array, made at the decoder's first write (None in ctx[0] until then)."""
    holder = <list>ctx
    try:
        out = np.empty(holder[1], dtype=holder[2])
    except MemoryError:
        return NULL
    holder[0] = out
    cdef uint8_t[::1] view = out.view(np.uint8).reshape(-1)
    return <void *>&view[0] if view.shape[0] else NULL


cdef void _fill_spec(pc_init_spec *s, dict spec, const double[::1] knots):
    name = spec["kind"].encode()
    s.kind = pc_init_kind(name, len(name))
    s.spec_version = spec["version"]
    s.a, s.b = spec.get("a", 0.0), spec.get("b", 0.0)
    s.mean, s.std = spec.get("mean", 0.0), spec.get("std", 0.0)
    s.gain, s.value = spec.get("gain", 0.0), spec.get("value", 0.0)
    s.low, s.high, s.p = spec.get("low", 0.0), spec.get("high", 0.0), spec.get("p", 0.0)
    s.levels, s.scale = spec.get("levels", 0.0), spec.get("scale", 0.0)
    s.mode_fan_out = spec.get("mode") == "fan_out"
    s.random_sign = bool(spec.get("random_sign", False))
    s.knots = &knots[0] if knots.shape[0] else NULL
    s.n_knots = knots.shape[0]
    s.density = spec["density"]
    s.tensor_granularity = spec["granularity"] == "tensor"
    s.fan_in, s.fan_out = spec["fan_in"], spec["fan_out"]


def decode(str coding, str name, str dtype, storage, dict spec, tuple key, uint64_t rows,
           uint64_t m, uint64_t lanes, const uint8_t[::1] payload, int threads=1, int bits=0,
           bint exact=False, weights=None, words=None, uint64_t refine_lanes=0):
    """(values, status, message): the rows x m values of the tensor (flat, numpy dtype
    ``storage``; None unless ``status`` is OK) and the decoder's status and one-line
    message."""
    cdef pc_seeded s
    cdef char err[256]
    err[0] = 0
    name_b = name.encode()
    knots = np.ascontiguousarray(spec.get("knots", ()), dtype=np.float64)
    w = np.ascontiguousarray(weights if weights is not None else (), dtype=np.int64)
    cdef const double[::1] knots_v = knots
    cdef const int64_t[::1] w_v = w
    s.name = name_b
    s.coding = _CODINGS[coding]
    s.dtype = _DTYPES[dtype]
    _fill_spec(&s.spec, spec, knots_v)
    s.k0, s.k1 = key
    s.rows, s.m, s.lanes = rows, m, lanes
    s.bits, s.exact = bits, exact
    s.has_words = words is not None
    s.words = words if words is not None else 0
    s.weights = &w_v[0] if w_v.shape[0] else NULL
    s.refine_lanes = refine_lanes
    holder = [None, rows * m, storage]
    cdef const uint8_t *data = &payload[0] if payload.shape[0] else NULL
    cdef uint64_t length = payload.shape[0]
    cdef int status
    with nogil:
        status = pc_seeded_decode(&s, data, length, _output, <void *>holder, threads, err,
                                  sizeof(err))
    if status != PC_OK:
        return None, status, err.decode(errors="replace")
    out = holder[0] if holder[0] is not None else np.empty(0, dtype=storage)
    return out, status, ""


def level_encode(cls, init_cls, freqs, uint64_t lanes):
    """(states, segment lengths, words) of rows of classes ``cls`` (R, m) coded with the
    tables ``freqs`` (C, C) of their initial classes ``init_cls`` (FORMAT 4.7)."""
    cdef const uint16_t[:, ::1] s = np.ascontiguousarray(cls, dtype=np.uint16)
    cdef const uint16_t[:, ::1] c = np.ascontiguousarray(init_cls, dtype=np.uint16)
    cdef const uint16_t[:, ::1] f = np.ascontiguousarray(freqs, dtype=np.uint16)
    cdef uint64_t rows = s.shape[0], m = s.shape[1], classes = f.shape[0]
    states = np.zeros(lanes, dtype=np.uint64)
    lengths = np.zeros(lanes, dtype=np.uint32)
    words = np.zeros(rows * m if rows * m else 1, dtype=np.uint32)
    cdef uint64_t[::1] st = states
    cdef uint32_t[::1] ln = lengths
    cdef uint32_t[::1] wd = words
    cdef int64_t n
    with nogil:
        n = pc_level_encode(&s[0, 0] if rows * m else NULL, &c[0, 0] if rows * m else NULL,
                            &f[0, 0] if classes else NULL, classes, rows, m, lanes, &st[0],
                            &ln[0], &wd[0])
    if n == -1:
        raise MemoryError("out of memory")
    if n < 0:
        raise ValueError("a symbol to code has frequency 0 in its table")
    return states, lengths, words[:n].copy()
