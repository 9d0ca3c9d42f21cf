"""Decoding a seeded tensor a run of rows at a time, in bounded memory.

A seeded decoder regenerates each run's initial values, classes them and decodes that
run's part of the stream, so its working set is one run (about :data:`DECODE_CHUNK`
values, at least one row) beside the output, and a garbage payload fails in its first
run. csrc/seeded_decode.c runs these same runs in C (:func:`decode_compiled`, where the
extension is built); the numpy runs below are its reference and the fallback.
``row-rans`` runs of lanes may go to a small thread pool (``PERMCODEC_THREADS``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .. import kernels
from ..core.dtypes import order_keys, storage_dtype
from ..core.initializers import initial_rows
from ..core.ops import NUMPY
from ..errors import FormatError, IntegrityError
from . import arrangement, buckets, rans

#: Values a seeded decoder takes at once (whole lanes of ``row-rans``, or rows of one
#: longer lane; whole groups of ``perm-rans`` and ``bucket-rans``; at least one row or
#: group): bounds the decoder's working memory to a few arrays of this many values.
DECODE_CHUNK = 1 << 13
#: Lanes of ``row-rans`` the compiled decoder steps together (their states' chains
#: overlap in the pipeline); runs of lanes come in multiples of it where they can.
LANE_GROUP = 4
#: Working memory of a seeded decoder per value of the run it decodes (measured:
#: regenerating and classing a row takes 50 to 100 bytes per value; decoding more).
RUN_BYTES_PER_VALUE = 128
#: Threads that decode runs of lanes side by side (default 1).
THREADS_ENV = "PERMCODEC_THREADS"

T = TypeVar("T")


_local = threading.local()


def decode_threads() -> int:
    """Threads that decode runs of lanes side by side (the C decoder and numpy's sort
    release the GIL): ``PERMCODEC_THREADS``, default 1, unless :func:`threads_here` set
    this thread's own count."""
    here = getattr(_local, "threads", None)
    if here is not None:
        return here
    env = os.environ.get(THREADS_ENV, "")
    return int(env) if env.isdigit() and int(env) >= 1 else 1


def threads_here(threads: int | None) -> None:
    """Decodes on this thread use ``threads`` threads (None: :data:`THREADS_ENV` again);
    a reader that decodes several tensors at once gives each its share."""
    _local.threads = threads


_POOLS: dict[int, Any] = {}


#: Whether seeded tensors decode by csrc/seeded_decode.c where it is built (its runs are
#: those below, fixed at :data:`DECODE_CHUNK` values); tests of the runs here turn it off.
COMPILED = True


def decode_compiled(coding: str, params: Any, payload: bytes, **bucket: Any) -> np.ndarray | None:
    """A seeded tensor decoded by csrc/seeded_decode.c, what the native decoder runs: the
    runs of this module in C, the GIL released, ``row-rans`` lanes on
    :func:`decode_threads` threads. None where that extension is not built (or the
    environment asks for the numpy reference): then the runs below decode it, with
    the rANS kernels or their numpy reference, to the same bits."""
    impl = kernels.load("seeded_c") if COMPILED else None
    if impl is None:
        return None
    meta, seed = params.meta, params.seed
    storage = storage_dtype(meta.dtype)
    values, status, message = impl.decode(
        coding, meta.name, meta.dtype, storage, seed.spec, tuple(seed.key), seed.rows,
        seed.m, params.lanes, payload, decode_threads(), **bucket,
    )  # fmt: skip
    if status == impl.OK:
        return values.reshape(meta.shape)
    if status == impl.UNSUPPORTED:  # outside the C's domain: the runs below decode it
        return None
    if status == impl.FORMAT:
        raise FormatError(message)
    if status == impl.INTEGRITY:
        raise IntegrityError(message, meta.name)
    raise MemoryError(message)


def run_all(fn: Callable[[T], None], jobs: list[T]) -> None:
    """``fn`` on every job, on the decoding thread pool when it has more than one
    thread; the first failing job, in order, raises."""
    threads = decode_threads() if len(jobs) > 1 else 1
    if threads == 1:
        for job in jobs:
            fn(job)
        return
    if threads not in _POOLS:
        from concurrent.futures import ThreadPoolExecutor

        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="permcodec-decode")
    for _ in _POOLS[threads].map(fn, jobs):
        pass


def lane_chunks(bounds: np.ndarray, m: int) -> list[tuple[int, int]]:
    """Runs of whole lanes [l0, l1) of about :data:`DECODE_CHUNK` values each, in
    multiples of :data:`LANE_GROUP` lanes where they stay under
    ``LANE_GROUP * DECODE_CHUNK`` values (the compiled decoder steps that many lanes
    together); a lane of more than :data:`DECODE_CHUNK` values is a run of its own
    (decoded in sub-runs, :func:`row_runs`)."""
    chunks, l0 = [], 0
    lanes = bounds.shape[0] - 1
    for lane in range(lanes):
        if (bounds[lane + 1] - bounds[lane]) * m > DECODE_CHUNK:
            chunks += [(l0, lane)] if l0 < lane else []  # the small lanes before a big one
            chunks.append((lane, lane + 1))
            l0 = lane + 1
            continue
        size = (bounds[lane + 1] - bounds[l0]) * m
        whole = (lane + 1 - l0) % LANE_GROUP == 0
        if (size >= DECODE_CHUNK and whole) or size >= LANE_GROUP * DECODE_CHUNK:
            chunks.append((l0, lane + 1))
            l0 = lane + 1
    return chunks + ([(l0, lanes)] if l0 < lanes else [])


def row_runs(bounds: np.ndarray, lanes: tuple[int, int], m: int) -> list[tuple[int, int]]:
    """Rows [r0, r1) of the runs that decode a run of lanes: several lanes at once, or
    one lane in sub-runs of about :data:`DECODE_CHUNK` values (at least one row: a
    row's classes need its whole init)."""
    r0, r1 = int(bounds[lanes[0]]), int(bounds[lanes[1]])
    if lanes[1] - lanes[0] > 1:
        return [(r0, r1)]
    step = max(1, DECODE_CHUNK // max(m, 1))
    return [(a, min(r1, a + step)) for a in range(r0, r1, step)]


def group_runs(rows: int, lanes: int, m: int) -> list[tuple[int, int]]:
    """Runs of rows [r0, r1) of whole groups of ``lanes`` rows (FORMAT 4.3.2), about
    :data:`DECODE_CHUNK` values each and at least one group."""
    step = lanes * max(1, DECODE_CHUNK // max(lanes * m, 1))
    return [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]


def group_run_values(rows: int, m: int, lanes: int) -> int:
    """Values in the largest run of whole groups of ``lanes`` rows."""
    return min(rows, max(lanes, -(-DECODE_CHUNK // max(m, 1)))) * m


class LazyRows:
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


def fill_rows(
    rows: int,
    m: int,
    dtype: np.dtype | type,
    runs: Iterable[tuple[int, int]],
    run_values: Callable[[int, int], np.ndarray],
) -> np.ndarray:
    """A (rows, m) array filled run by run with ``run_values(r0, r1)``, allocated once
    the first run has decoded (:class:`LazyRows`)."""
    out = LazyRows(rows, m, dtype)
    for r0, r1 in runs:
        out.put(r0, r1, run_values(r0, r1))
    return out.result()


@dataclass
class SeededRows:
    """A tensor's initial values, regenerated a run of rows at a time."""

    spec: dict[str, Any]
    key: tuple[int, int]
    shape: tuple[int, ...]
    dtype: str
    name: str

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows r0..r1-1 of the init."""
        return initial_rows(self.spec, self.key, self.shape, self.dtype, rows=(r0, r1))

    def classes(self, r0: int, r1: int) -> tuple[np.ndarray, arrangement.RowClasses]:
        """Rows r0..r1-1 of the init and their classes."""
        init = self.rows(r0, r1)
        return init, arrangement.row_classes(init, order_keys(init, self.dtype))

    def buckets(
        self, r0: int, r1: int, bits: int
    ) -> tuple[arrangement.RowClasses, buckets.Buckets]:
        """Classes and buckets of rows r0..r1-1 of the init."""
        init = self.rows(r0, r1)
        rc, init_cls = arrangement.init_classes(init, order_keys(init, self.dtype))
        return rc, buckets.bucketize(rc, init_cls, bits)

    def bucket_counts(
        self, r0: int, r1: int, bits: int
    ) -> tuple[arrangement.RowClasses, np.ndarray, np.ndarray]:
        """What a lossless bucket decoder needs of rows r0..r1-1 of the init: their
        classes (values and counts; ``counts`` None in rows of distinct values, no
        sorted keys), the values per bucket (R, K) and each position's bucket (R, m)."""
        init = self.rows(r0, r1)
        keys = order_keys(init, self.dtype)
        got = init_buckets(init, keys, bits)
        if got is not None:
            return got
        rc, init_cls = arrangement.init_classes(init, keys)
        bk = buckets.bucketize(rc, init_cls, bits)
        counts = None if rc.distinct else rc.counts
        return (
            arrangement.RowClasses(counts, rc.values, None, None, rc.distinct),
            bk.counts,
            bk.init_ctx,
        )


def init_buckets(
    init: np.ndarray, keys: np.ndarray, bits: int
) -> tuple[arrangement.RowClasses, np.ndarray, np.ndarray] | None:
    """:meth:`SeededRows.bucket_counts` of rows ``init`` with order keys ``keys`` by the
    compiled kernel, in one pass after the row sort; None without it or for keys wider
    than 32 bits."""
    width = 8 * init.dtype.itemsize
    fast = kernels.load("rans") if width <= 32 and init.size else None
    if fast is None or not hasattr(fast.impl, "init_buckets_kernel"):
        return None
    packed = np.sort((keys << 32) | np.arange(init.shape[1]), axis=1)
    got = fast.init_buckets(packed, 1 << bits)
    if got is None:
        return None
    counts, first, ctx, per_bucket, distinct = got
    if distinct:  # class c is the c-th smallest value
        values = NUMPY.values_of_keys(packed >> 32, init, width)
        return arrangement.RowClasses(None, values, None, None, True), per_bucket, ctx
    values = NUMPY.values_of_keys(np.take_along_axis(packed, first, axis=1) >> 32, init, width)
    values[counts == 0] = 0  # padding classes
    return arrangement.RowClasses(counts, values, None, None, False), per_bucket, ctx


def place_refined(
    seq: np.ndarray, sym: np.ndarray, rc: arrangement.RowClasses, k: int
) -> np.ndarray | None:
    """Rows of values from a refinement's classes ``seq`` (bucket-major) and the bucket
    of every position, by the compiled kernel in one pass; None without it."""
    fast = kernels.load("rans")
    return None if fast is None else fast.place_refined(seq, sym, rc.values, k)


@dataclass
class Stream:
    """An interleaved rANS stream of a payload (rows of ``m`` values), decoded a run of
    whole groups at a time: the lane states and word position carry between runs."""

    states: np.ndarray
    words: np.ndarray
    rows: int
    m: int
    name: str
    pos: int = 0

    def runs(self) -> list[tuple[int, int]]:
        return group_runs(self.rows, self.states.shape[0], self.m)

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

    def symbols(
        self, r1: int, ctx: np.ndarray, counts: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """Bucket symbols of the next run (ending at row ``r1``), context-coded with
        each position's initial bucket ``ctx`` and the values per bucket ``counts``."""
        sym, self.states, self.pos = rans.decode_ctx_run(
            self.states,
            self.words,
            ctx,
            counts,
            weights,
            self.name,
            pos=self.pos,
            final=r1 == self.rows,
        )
        return sym


class RowParts:
    """Consecutive row ranges of one (rows, ...) array, kept as the parts they were
    made in: added at the end, read across parts, dropped from the front."""

    def __init__(self) -> None:
        self.parts: list[tuple[int, np.ndarray]] = []
        self.end = 0

    def add(self, r0: int, part: np.ndarray) -> None:
        self.parts.append((r0, part))
        self.end = r0 + part.shape[0]

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows r0..r1-1 (a view when one part holds them all)."""
        pieces = [
            p[max(r0 - s, 0) : r1 - s] for s, p in self.parts if s < r1 and s + p.shape[0] > r0
        ]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def drop(self, r1: int) -> None:
        """Forget the parts that end at or before row ``r1``."""
        self.parts = [(s, p) for s, p in self.parts if s + p.shape[0] > r1]
