"""Tensor <-> payload: seeded tensors as coded arrangements, the rest as zstd bytes.

Works one tensor at a time on numpy arrays in the storage dtypes of
:mod:`permcodec.dtypes`, so memory stays near one tensor's working set.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from . import arrangement, buckets, container, rans
from .container import section_digest
from .dtypes import FLOAT_DTYPES, as_float64, c_contiguous, from_float32, order_keys, storage_dtype
from .errors import FormatError, IntegrityError, PlanError
from .initializers import check_resolved, fans, generate, row_shape
from .plan import TensorPlan
from .validate import is_int

ZSTD_LEVEL = 10
#: Longest row the 31-bit coder can model.
MAX_ROW = rans.PROB_ONE
#: Bucket depths tried for lossless context coding, and the least gain (as a fraction
#: of the bound) that makes it worth a second coding layer.
REFINE_BITS = (2, 3, 4, 5, 6)
REFINE_MIN_GAIN = 0.01


def init_rows(
    spec: dict[str, Any],
    key: tuple[int, int],
    shape: tuple[int, ...],
    dtype: str,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """The seeded initial values of a tensor as (rows, m), in the storage dtype (only
    rows r0..r1-1 with ``rows=(r0, r1)``)."""
    return from_float32(generate(spec, key, shape, rows=rows), dtype)


def _check_plan_fits(name: str, tp: TensorPlan, shape: tuple[int, ...], dtype: str) -> None:
    if dtype not in FLOAT_DTYPES:
        raise PlanError(f"tensor {name!r} has dtype {dtype}; only {FLOAT_DTYPES} can be seeded")
    check_resolved(tp.spec)
    if row_shape(shape, tp.spec["granularity"])[1] > MAX_ROW:
        raise PlanError(f"tensor {name!r} has rows longer than {MAX_ROW} values")
    if (tp.spec.get("fan_in"), tp.spec.get("fan_out")) != fans(shape):
        raise PlanError(
            f"tensor {name!r} has shape {list(shape)}, which does not match its "
            "plan (the fans differ)"
        )


def encode_tensor(
    name: str,
    array: np.ndarray,
    dtype: str,
    tp: TensorPlan | None,
    bits: int | None = None,
    original: np.ndarray | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Header entry (without offset) and payload bytes of one tensor.

    A seeded tensor is coded losslessly (``row-rans``, or ``bucket-rans`` with
    ``exact`` when its bucket moves are predictable enough to pay), or, with ``bits``,
    as its rank buckets only (lossy unless the rows are already in bucketed form).
    A lossy entry records ``rel_error``, the relative L2 error against ``original``
    (default: ``array``).
    """
    array = c_contiguous(array, storage_dtype(dtype))
    shape = tuple(int(d) for d in array.shape)
    entry: dict[str, Any] = {"name": name, "shape": list(shape), "dtype": dtype}
    decoded = array
    if tp is None:
        raw = array.tobytes()
        payload = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
        entry["coding"] = "raw-zstd"
        if len(payload) >= len(raw):
            entry["coding"], payload = "raw", raw
    else:
        _check_plan_fits(name, tp, shape, dtype)
        rows, m = row_shape(shape, tp.spec["granularity"])
        init = init_rows(tp.spec, tp.key, shape, dtype)
        rc = arrangement.row_classes(init, order_keys(init, dtype))
        cls = arrangement.classes_of(order_keys(array.reshape(rows, m), dtype), rc, name)
        entry.update(spec=dict(tp.spec), key=list(tp.key))
        init_cls = arrangement.classes_of(order_keys(init, dtype), rc, name)
        if bits is not None and rows * m:
            extra, payload, cls = _encode_lossy(cls, rc, init_cls, bits)
            decoded = arrangement.rebuild(cls, rc).reshape(shape)
        else:
            extra, payload = _encode_lossless(cls, rc, init_cls)
        entry.update(extra)
    entry["digest"] = section_digest(np.ascontiguousarray(decoded))
    if decoded is not array or original is not None:
        ref = original if original is not None else array
        entry["rel_error"] = relative_error(ref, decoded, dtype)
    entry["payload_digest"] = section_digest(payload)
    return entry, payload


def relative_error(reference: np.ndarray, approx: np.ndarray, dtype: str) -> float:
    """||reference - approx|| / ||reference|| (0.0 when both are zero)."""
    ref, app = as_float64(reference, dtype), as_float64(approx, dtype)
    diff = float(np.linalg.norm((ref - app).ravel()))
    norm = float(np.linalg.norm(ref.ravel()))
    return diff / norm if norm else (0.0 if diff == 0 else math.inf)


def _rans_bytes(states: np.ndarray, *u32_arrays: np.ndarray) -> bytes:
    """Lane states as little-endian u64, then each array as little-endian u32."""
    return states.astype("<u8").tobytes() + b"".join(a.astype("<u4").tobytes() for a in u32_arrays)


def _encode_lossless(
    cls: np.ndarray, rc: arrangement.RowClasses, init_cls: np.ndarray
) -> tuple[dict[str, Any], bytes]:
    """``row-rans``, or exact ``bucket-rans`` when the context model saves bits."""
    rows = cls.shape[0]
    bound = arrangement.bound_bits(rc.counts)
    choice = _choose_refine_bits(cls, rc, init_cls, bound)
    if choice is None:
        lanes = rans.choose_segment_lanes(rows, bound)
        payload = _rans_bytes(*rans.encode_rows(cls, rc.counts, lanes))
        return {"coding": "row-rans", "lanes": lanes, "bound_bits": bound}, payload
    bk, sym, weights = choice
    extra, head = _encode_bucket_layer(sym, bk, weights)
    seq, totals = buckets.refinement(cls, sym, bk)
    refine_lanes = rans.choose_lanes(rows, bound - arrangement.bound_bits(bk.counts))
    tail = _rans_bytes(*rans.encode(seq, rc.counts, refine_lanes, totals))
    extra.update(exact=True, refine_lanes=refine_lanes, bound_bits=bound)
    return extra, head + tail


def _choose_refine_bits(
    cls: np.ndarray, rc: arrangement.RowClasses, init_cls: np.ndarray, bound: float
) -> tuple[buckets.Buckets, np.ndarray, np.ndarray] | None:
    """The bucket depth whose context model saves most over ``bound``, if it saves at
    least ``REFINE_MIN_GAIN`` of it (estimated with the static model)."""
    m = cls.shape[1]
    best, best_gain = None, REFINE_MIN_GAIN * bound
    for bits in REFINE_BITS:
        if (1 << bits) > m:
            break
        bk = buckets.bucketize(rc, init_cls, bits)
        sym = buckets.symbols(cls, bk)
        weights = buckets.fit_weights(sym, bk.init_ctx, bits)
        est = buckets.ctx_cost_estimate(sym, bk.init_ctx, weights, bk.k)
        gain = arrangement.bound_bits(bk.counts) - est - buckets.table_bits(weights)
        if gain > best_gain:
            best, best_gain = (bk, sym, weights), gain
    return best


def _encode_bucket_layer(
    sym: np.ndarray, bk: buckets.Buckets, weights: np.ndarray | None
) -> tuple[dict[str, Any], bytes]:
    """Entry keys and bytes of the bucket layer (context-coded bucket symbols)."""
    rows = sym.shape[0]
    w = weights if weights is not None else np.ones(2 * bk.k - 1, dtype=np.int64)
    est = buckets.ctx_cost_estimate(sym, bk.init_ctx, w, bk.k)
    lanes = rans.choose_lanes(rows, est)
    states, words = rans.encode_ctx(sym, bk.init_ctx, bk.counts, w, lanes)
    extra = {
        "coding": "bucket-rans",
        "bits": bk.bits,
        "exact": False,
        "weights": None if weights is None else [int(v) for v in weights],
        "lanes": lanes,
        "words": int(words.shape[0]),
    }
    return extra, _rans_bytes(states, words)


def _encode_lossy(
    cls: np.ndarray, rc: arrangement.RowClasses, init_cls: np.ndarray, bits: int
) -> tuple[dict[str, Any], bytes, np.ndarray]:
    """Bucket layer only; returns the classes the decoder will rebuild too. The context
    table is kept only when it pays for itself."""
    bk = buckets.bucketize(rc, init_cls, bits)
    sym = buckets.symbols(cls, bk)
    weights = buckets.fit_weights(sym, bk.init_ctx, bits)
    est = buckets.ctx_cost_estimate(sym, bk.init_ctx, weights, bk.k)
    if est + buckets.table_bits(weights) >= arrangement.bound_bits(bk.counts):
        weights = None
    extra, payload = _encode_bucket_layer(sym, bk, weights)
    return extra, payload, buckets.rebuild_lossy_cls(sym, bk, rc)


def decode_tensor(entry: dict[str, Any], payload: bytes) -> np.ndarray:
    """Rebuild one tensor from its header entry and payload; checks both digests."""
    name = entry["name"]
    if section_digest(payload) != entry["payload_digest"]:
        raise IntegrityError(f"checksum mismatch in the payload of tensor {name!r}", name)
    shape = tuple(entry["shape"])
    dtype = entry["dtype"]
    sdt = storage_dtype(dtype)
    numel = math.prod(shape)
    if entry["coding"] == "raw":
        if len(payload) != numel * sdt.itemsize:
            raise FormatError(
                f"tensor {name!r}: raw payload holds {len(payload)} bytes, "
                f"expected {numel * sdt.itemsize}"
            )
        out = np.frombuffer(payload, dtype=sdt).reshape(shape).copy()
    elif entry["coding"] == "raw-zstd":
        out = np.frombuffer(_unzstd(payload, numel * sdt.itemsize, name), dtype=sdt)
        out = out.reshape(shape).copy()
    else:
        out = _decode_perm(entry, payload, shape, dtype)
    if dtype == "bool" and out.view(np.uint8).max(initial=0) > 1:
        raise FormatError(f"tensor {name!r}: bool values other than 0 and 1")
    if section_digest(np.ascontiguousarray(out)) != entry["digest"]:
        raise IntegrityError(f"digest mismatch in decoded tensor {name!r}", name)
    return out


def _unzstd(payload: bytes, expected: int, name: str) -> bytes:
    """Decompress exactly one zstd frame that declares exactly ``expected`` bytes."""
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as e:
        raise FormatError(f"tensor {name!r}: not a zstd frame ({e})") from None
    if declared != expected:
        raise FormatError(
            f"tensor {name!r}: zstd frame declares {declared} bytes, the tensor needs {expected}"
        )
    dobj = zstandard.ZstdDecompressor().decompressobj()
    try:
        raw = dobj.decompress(payload)
    except zstandard.ZstdError as e:
        raise IntegrityError(f"tensor {name!r}: zstd payload is corrupt ({e})", name) from None
    if len(raw) != expected or dobj.unused_data or not dobj.eof:
        raise FormatError(
            f"tensor {name!r}: zstd payload does not hold exactly one frame of {expected} bytes"
        )
    return raw


SEEDED_CODINGS = ("perm-rans", "row-rans", "bucket-rans")
#: Values a seeded decoder takes at once (whole lanes of ``row-rans``, or rows of one
#: longer lane; whole groups of ``perm-rans`` and ``bucket-rans``; at least one row or
#: group): bounds the decoder's working memory to a few arrays of this many values.
DECODE_CHUNK = 1 << 13


def _seed_fields(
    entry: dict[str, Any], shape: tuple[int, ...], dtype: str
) -> tuple[dict[str, Any], tuple[int, int], int, int]:
    """Validate the seed fields of an entry: (spec, key, rows, row length)."""
    name = entry["name"]
    if dtype not in FLOAT_DTYPES:
        raise FormatError(f"tensor {name!r}: seeded tensors must be floating point, not {dtype}")
    spec, key = entry.get("spec"), entry.get("key")
    if not (
        isinstance(spec, dict)
        and isinstance(key, list)
        and len(key) == 2
        and all(is_int(k) and 0 <= k < 2**32 for k in key)
    ):
        raise FormatError(f"tensor {name!r}: malformed {entry['coding']} entry")
    try:
        check_resolved(spec, shape)
    except PlanError as e:
        raise FormatError(f"tensor {name!r}: bad initializer spec: {e}") from None
    rows, m = row_shape(shape, spec["granularity"])
    if m > MAX_ROW:
        raise FormatError(f"tensor {name!r}: rows of {m} values exceed the limit {MAX_ROW}")
    return spec, (key[0], key[1]), rows, m


#: Working memory of a seeded decoder per value of the run it decodes (measured:
#: regenerating and classing a row takes 50 to 100 bytes per value; decoding more).
RUN_BYTES_PER_VALUE = 128


def decode_bytes(entries: list[dict[str, Any]]) -> int:
    """Memory that decoding every tensor of checked ``entries`` may take: the decoded
    tensors, plus the working set of the largest run of rows."""
    runs = [_largest_run(e) for e in entries if e["coding"] in SEEDED_CODINGS]
    return container.claimed_bytes(entries) + RUN_BYTES_PER_VALUE * max(runs, default=0)


def _largest_run(entry: dict[str, Any]) -> int:
    """Values in the largest run a seeded decoder takes at once: at least a row; for
    ``perm-rans`` and ``bucket-rans`` at least a group of ``lanes`` rows."""
    rows, m = row_shape(tuple(entry["shape"]), entry["spec"]["granularity"])
    if entry["coding"] == "row-rans":
        return min(rows * m, max(m, 2 * DECODE_CHUNK))
    refine = entry.get("refine_lanes")
    lanes = max(entry["lanes"], refine if is_int(refine) else 1)
    return min(rows, max(lanes, -(-DECODE_CHUNK // max(m, 1)))) * m


def check_entry(entry: dict[str, Any]) -> None:
    """Validate the coding-specific fields of a header entry that passed the container's
    checks, without decoding anything (readers call it when they open a file)."""
    if entry["coding"] in SEEDED_CODINGS:
        shape = tuple(entry["shape"])
        _, _, rows, _ = _seed_fields(entry, shape, entry["dtype"])
        lanes = entry.get("lanes")
        if not is_int(lanes) or not 1 <= lanes <= max(rows, 1):
            raise FormatError(f"tensor {entry['name']!r}: {lanes!r} lanes for {rows} rows")


def _split_segments(
    name: str, payload: bytes, lanes: Any, rows: int, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states, segment lengths, words) of a ``row-rans`` payload, every length
    checked against the payload and against the steps of its lane."""
    if not is_int(lanes) or not 1 <= lanes <= max(rows, 1):
        raise FormatError(f"tensor {name!r}: {lanes!r} lanes for {rows} rows")
    if len(payload) < 12 * lanes or (len(payload) - 12 * lanes) % 4:
        raise FormatError(
            f"tensor {name!r}: payload length {len(payload)} does not fit {lanes} lanes"
        )
    states = np.frombuffer(payload, dtype="<u8", count=lanes)
    lengths = np.frombuffer(payload, dtype="<u4", count=lanes, offset=8 * lanes)
    n_words = (len(payload) - 12 * lanes) // 4
    if int(lengths.astype(np.int64).sum()) != n_words:
        raise FormatError(
            f"tensor {name!r}: segment lengths add up to {int(lengths.sum())} words, "
            f"the payload holds {n_words}"
        )
    steps = np.diff(rans.lane_bounds(rows, lanes)) * m
    if (lengths > steps).any():  # a step reads at most one word
        raise FormatError(f"tensor {name!r}: a lane's segment is longer than its steps")
    words = np.frombuffer(payload, dtype="<u4", count=n_words, offset=12 * lanes)
    return states, lengths, words


_POOLS: dict[int, ThreadPoolExecutor] = {}


def decode_threads() -> int:
    """Threads that decode runs of lanes side by side (numpy's sort and the numba
    kernels release the GIL): ``PERMCODEC_THREADS``, default 1. More threads pay on idle
    cores; on a busy 2-core machine they measured slower than one."""
    env = os.environ.get("PERMCODEC_THREADS", "")
    return int(env) if env.isdigit() and int(env) >= 1 else 1


def _pool() -> ThreadPoolExecutor | None:
    """The decoding thread pool, or None when one thread is asked for."""
    threads = decode_threads()
    if threads == 1:
        return None
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="permcodec-decode")
    return _POOLS[threads]


def _lane_chunks(bounds: np.ndarray, m: int) -> list[tuple[int, int]]:
    """Runs of whole lanes [l0, l1) of about :data:`DECODE_CHUNK` values each; a lane
    of more values is a run of its own (decoded in sub-runs, :func:`_row_runs`)."""
    chunks, l0 = [], 0
    lanes = bounds.shape[0] - 1
    for lane in range(1, lanes + 1):
        if l0 < lane - 1 and (bounds[lane] - bounds[lane - 1]) * m > DECODE_CHUNK:
            chunks.append((l0, lane - 1))  # the small lanes before a big one
            l0 = lane - 1
        if (bounds[lane] - bounds[l0]) * m >= DECODE_CHUNK or lane == lanes:
            chunks.append((l0, lane))
            l0 = lane
    return chunks


def _row_runs(bounds: np.ndarray, lanes: tuple[int, int], m: int) -> list[tuple[int, int]]:
    """Rows [r0, r1) of the runs that decode a run of lanes: several lanes at once, or
    one lane in sub-runs of about :data:`DECODE_CHUNK` values (at least one row: a
    row's classes need its whole init)."""
    r0, r1 = int(bounds[lanes[0]]), int(bounds[lanes[1]])
    if lanes[1] - lanes[0] > 1:
        return [(r0, r1)]
    step = max(1, DECODE_CHUNK // max(m, 1))
    return [(a, min(r1, a + step)) for a in range(r0, r1, step)]


class _LazyRows:
    """A (rows, m) output allocated at its first write (threads may share it), so a
    garbage payload that claims a huge tensor fails without asking for the tensor's
    memory (np.empty would only reserve it, but tracemalloc and a strict overcommit
    policy count it)."""

    def __init__(self, rows: int, m: int, dtype: np.dtype | type) -> None:
        self.shape, self.dtype = (rows, m), dtype
        self.array: np.ndarray | None = None
        self._lock = threading.Lock()

    def put(self, r0: int, r1: int, values: np.ndarray) -> None:
        if self.array is None:
            with self._lock:
                if self.array is None:
                    self.array = np.empty(self.shape, dtype=self.dtype)
        self.array[r0:r1] = values

    def result(self) -> np.ndarray:
        return np.empty(self.shape, dtype=self.dtype) if self.array is None else self.array


def _decode_row_rans(
    entry: dict[str, Any], payload: bytes, shape: tuple[int, ...], dtype: str
) -> np.ndarray:
    """A ``row-rans`` tensor, a run of lanes (or of one lane's rows) at a time: each run
    regenerates only its own rows of the init, so memory stays near the output plus
    one run, and a garbage payload fails in its first run."""
    name = entry["name"]
    spec, key, rows, m = _seed_fields(entry, shape, dtype)
    states, lengths, words = _split_segments(name, payload, entry.get("lanes"), rows, m)
    if rows * m == 0:
        if words.size or (states != rans.STATE_LOW).any():
            raise IntegrityError(f"tensor {name!r}: an empty tensor has coded data", name)
        return np.empty(shape, dtype=storage_dtype(dtype))
    bounds = rans.lane_bounds(rows, len(states))
    starts = np.zeros(len(states) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    init = _SeededRows(spec, key, shape, dtype, name)
    out = _LazyRows(rows, m, storage_dtype(dtype))

    def run(lanes: tuple[int, int]) -> None:
        """Decode lanes [l0, l1) run by run, their states and word positions carried."""
        l0, l1 = lanes
        x, used = states[l0:l1], None
        seg = words[starts[l0] : starts[l1]]
        runs = _row_runs(bounds, lanes, m)
        for r0, r1 in runs:
            _, rc = init.classes(r0, r1)
            # several lanes decode in one run; a lane's sub-run holds rows of it alone
            lane_rows = (
                bounds[l0 : l1 + 1] - r0
                if len(runs) == 1
                else np.array([0, r1 - r0], dtype=np.int64)
            )
            cls, x, used = rans.decode_rows_run(
                x,
                lengths[l0:l1],
                seg,
                rc.counts,
                m,
                name,
                lane_rows,
                used=used,
                final=r1 == runs[-1][1],
            )
            out.put(r0, r1, arrangement.rebuild(cls, rc))

    chunks = _lane_chunks(bounds, m)
    pool = _pool() if len(chunks) > 1 else None
    for _ in map(run, chunks) if pool is None else pool.map(run, chunks):
        pass  # the first failing run, in order, raises
    return out.result().reshape(shape)


def _split_rans(
    name: str, payload: bytes, offset: int, lanes: Any, n_words: Any, rows: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(states, words, end offset) of one rANS stream at ``offset``; ``n_words`` None
    means the stream runs to the end of the payload."""
    if not is_int(lanes) or not 1 <= lanes <= max(rows, 1):
        raise FormatError(f"tensor {name!r}: {lanes!r} lanes for {rows} rows")
    rest = len(payload) - offset - 8 * lanes
    if n_words is None:
        if rest < 0 or rest % 4:
            raise FormatError(
                f"tensor {name!r}: payload length {len(payload)} does not fit {lanes} lanes"
            )
        n_words = rest // 4
    elif not is_int(n_words) or n_words < 0 or 4 * n_words > rest:
        raise FormatError(f"tensor {name!r}: payload too short for {n_words!r} words")
    states = np.frombuffer(payload, dtype="<u8", count=lanes, offset=offset)
    words = np.frombuffer(payload, dtype="<u4", count=n_words, offset=offset + 8 * lanes)
    return states, words, offset + 8 * lanes + 4 * n_words


def _decode_perm(
    entry: dict[str, Any], payload: bytes, shape: tuple[int, ...], dtype: str
) -> np.ndarray:
    """A seeded tensor (``row-rans``, ``bucket-rans`` or ``perm-rans``)."""
    if entry["coding"] == "row-rans":
        return _decode_row_rans(entry, payload, shape, dtype)
    if entry["coding"] == "bucket-rans":
        return _decode_buckets(entry, payload, shape, dtype)
    return _decode_perm_rans(entry, payload, shape, dtype)


def _group_runs(rows: int, lanes: int, m: int) -> list[tuple[int, int]]:
    """Runs of rows [r0, r1) of whole groups of ``lanes`` rows (FORMAT 4.3.2), about
    :data:`DECODE_CHUNK` values each and at least one group."""
    step = lanes * max(1, DECODE_CHUNK // max(lanes * m, 1))
    return [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]


@dataclass
class _Stream:
    """An interleaved rANS stream of a payload (rows of ``m`` values), decoded a run of
    whole groups at a time: the lane states and word position carry between runs."""

    states: np.ndarray
    words: np.ndarray
    rows: int
    m: int
    name: str
    pos: int = 0

    def runs(self) -> list[tuple[int, int]]:
        return _group_runs(self.rows, self.states.shape[0], self.m)

    def classes(self, r1: int, counts: np.ndarray, totals: np.ndarray | None = None) -> np.ndarray:
        """Classes of the next run (ending at row ``r1``) under the multiset model."""
        cls, self.states, self.pos = rans.decode_run(
            self.states,
            self.words,
            counts,
            self.m,
            self.name,
            totals,
            pos=self.pos,
            final=r1 == self.rows,
        )
        return cls

    def symbols(self, r1: int, bk: buckets.Buckets, weights: np.ndarray) -> np.ndarray:
        """Bucket symbols of the next run (ending at row ``r1``), context-coded."""
        sym, self.states, self.pos = rans.decode_ctx_run(
            self.states,
            self.words,
            bk.init_ctx,
            bk.counts,
            weights,
            self.name,
            pos=self.pos,
            final=r1 == self.rows,
        )
        return sym


@dataclass
class _SeededRows:
    """A tensor's initial values, regenerated a run of rows at a time."""

    spec: dict[str, Any]
    key: tuple[int, int]
    shape: tuple[int, ...]
    dtype: str
    name: str

    def classes(self, r0: int, r1: int) -> tuple[np.ndarray, arrangement.RowClasses]:
        """Rows r0..r1-1 of the init and their classes."""
        init = init_rows(self.spec, self.key, self.shape, self.dtype, rows=(r0, r1))
        return init, arrangement.row_classes(init, order_keys(init, self.dtype))

    def buckets(
        self, r0: int, r1: int, bits: int
    ) -> tuple[arrangement.RowClasses, buckets.Buckets]:
        """Classes and buckets of rows r0..r1-1 of the init."""
        init, rc = self.classes(r0, r1)
        init_cls = arrangement.classes_of(order_keys(init, self.dtype), rc, self.name)
        return rc, buckets.bucketize(rc, init_cls, bits)


def _fill_rows(
    rows: int,
    m: int,
    dtype: np.dtype | type,
    runs: list[tuple[int, int]],
    run_values: Callable[[int, int], np.ndarray],
) -> np.ndarray:
    """A (rows, m) array filled run by run with ``run_values(r0, r1)``, allocated once
    the first run has decoded (:class:`_LazyRows`)."""
    out = _LazyRows(rows, m, dtype)
    for r0, r1 in runs:
        out.put(r0, r1, run_values(r0, r1))
    return out.result()


def _decode_perm_rans(
    entry: dict[str, Any], payload: bytes, shape: tuple[int, ...], dtype: str
) -> np.ndarray:
    """A ``perm-rans`` tensor, a run of whole groups at a time: each run regenerates
    only its own rows of the init, so memory stays near the output plus one run."""
    name = entry["name"]
    spec, key, rows, m = _seed_fields(entry, shape, dtype)
    states, words, _ = _split_rans(name, payload, 0, entry.get("lanes"), None, rows)
    if rows * m == 0:  # the reference checks that the stream is empty
        rans.decode(states, words, np.zeros((rows, 0), np.int64), m, name)
        return np.empty(shape, dtype=storage_dtype(dtype))
    init = _SeededRows(spec, key, shape, dtype, name)
    stream = _Stream(states, words, rows, m, name)

    def run(r0: int, r1: int) -> np.ndarray:
        _, rc = init.classes(r0, r1)
        return arrangement.rebuild(stream.classes(r1, rc.counts), rc)

    return _fill_rows(rows, m, storage_dtype(dtype), stream.runs(), run).reshape(shape)


def _bucket_model(entry: dict[str, Any], m: int) -> tuple[int, bool, np.ndarray]:
    """(bits, exact, context weights) of a ``bucket-rans`` entry, validated."""
    name = entry["name"]
    bits, exact, weights = entry.get("bits"), entry.get("exact"), entry.get("weights")
    if not (is_int(bits) and 1 <= bits <= buckets.MAX_BITS and isinstance(exact, bool)):
        raise FormatError(f"tensor {name!r}: malformed bucket-rans entry")
    k = 1 << bits
    if weights is None:
        return bits, exact, np.ones(2 * k - 1, dtype=np.int64)
    if (
        isinstance(weights, list)
        and len(weights) == 2 * k - 1
        and all(is_int(v) and 1 <= v <= buckets.max_weight(m) for v in weights)
    ):
        return bits, exact, np.asarray(weights, dtype=np.int64)
    raise FormatError(f"tensor {name!r}: bad context weights for {bits} bits")


def _decode_buckets(
    entry: dict[str, Any], payload: bytes, shape: tuple[int, ...], dtype: str
) -> np.ndarray:
    """A ``bucket-rans`` tensor: its bucket layer, then the refinement stream or the
    initial-rank rule; each stream a run of its own groups at a time."""
    name = entry["name"]
    spec, key, rows, m = _seed_fields(entry, shape, dtype)
    bits, exact, weights = _bucket_model(entry, m)
    states, words, end = _split_rans(name, payload, 0, entry.get("lanes"), entry.get("words"), rows)
    if rows * m == 0:  # the reference checks that the bucket stream is empty
        empty = np.zeros((rows, m), np.int64)
        rans.decode_ctx(states, words, empty, np.zeros((rows, 1 << bits), np.int64), weights, name)
        return np.empty(shape, dtype=storage_dtype(dtype))
    if not exact and end != len(payload):
        raise FormatError(f"tensor {name!r}: {len(payload) - end} bytes after the stream")
    init = _SeededRows(spec, key, shape, dtype, name)
    layer = _Stream(states, words, rows, m, name)
    if not exact:
        return _lossy_rows(init, layer, bits, weights).reshape(shape)
    refine_lanes = entry.get("refine_lanes")
    refine_states, refine_words, _ = _split_rans(name, payload, end, refine_lanes, None, rows)
    refine = _Stream(refine_states, refine_words, rows, m, name)
    return _exact_rows(init, layer, refine, bits, weights).reshape(shape)


def _lossy_rows(init: _SeededRows, layer: _Stream, bits: int, weights: np.ndarray) -> np.ndarray:
    """Rows rebuilt from their buckets alone (FORMAT 5.4), a run of the bucket
    stream's groups at a time."""

    def run(r0: int, r1: int) -> np.ndarray:
        rc, bk = init.buckets(r0, r1, bits)
        sym = layer.symbols(r1, bk, weights)
        return arrangement.rebuild(buckets.rebuild_lossy_cls(sym, bk, rc), rc)

    return _fill_rows(layer.rows, layer.m, storage_dtype(init.dtype), layer.runs(), run)


def _exact_rows(
    init: _SeededRows, layer: _Stream, refine: _Stream, bits: int, weights: np.ndarray
) -> np.ndarray:
    """Rows from their buckets and the refinement stream. The two streams group rows
    by different lanes, so the bucket symbols of all rows come first (uint8: K <= 256)."""

    def run_buckets(r0: int, r1: int) -> np.ndarray:
        return layer.symbols(r1, init.buckets(r0, r1, bits)[1], weights)

    sym_all = _fill_rows(layer.rows, layer.m, np.uint8, layer.runs(), run_buckets)

    def run(r0: int, r1: int) -> np.ndarray:
        _, rc = init.classes(r0, r1)
        sym = sym_all[r0:r1].astype(np.int64)
        totals = buckets.segment_totals(np.sort(sym, axis=1), buckets.class_buckets(rc, bits)[1])
        seq = refine.classes(r1, rc.counts, totals)
        return arrangement.rebuild(buckets.unrefine(seq, sym), rc)

    return _fill_rows(layer.rows, layer.m, storage_dtype(init.dtype), refine.runs(), run)
