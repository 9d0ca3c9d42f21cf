"""``bucket-rans`` (FORMAT 4.4): each weight's rank bucket, coded with its initial
bucket as context, then (``exact``) which value sits where inside each bucket.

Lossless when it pays (trained ranks near the initial ones make the bucket layer cheap)
and, without the refinement stream, the lossy "rank buckets only" form: the decoder
gives each bucket's positions that bucket's values in the order of their initial ranks
(FORMAT 5.4), so the row is still an exact arrangement of its init.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.checks import is_int
from ..core.dtypes import storage_dtype
from ..errors import FormatError
from . import arrangement, buckets, rans, runs
from .base import (
    Meta,
    SeededCoding,
    SeededParams,
    parse_lanes,
    parse_seeded,
    rans_bytes,
    split_rans,
)

#: Bucket depths tried for lossless context coding, and the least gain (as a fraction
#: of the bound) that makes it worth a second coding layer.
REFINE_BITS = (2, 3, 4, 5, 6)
REFINE_MIN_GAIN = 0.01
#: Most values the bucket depth is chosen on (rows spread over the tensor): the gains of
#: the depths differ by far more than their estimates vary between samples of rows.
SEARCH_VALUES = 1 << 17


@dataclass(frozen=True)
class BucketParams(SeededParams):
    bits: int
    exact: bool
    weights: np.ndarray  # (2K - 1,) context weights (all ones when the entry has none)
    words: int | None  # words of the bucket stream (None: it runs to the payload's end)
    refine_lanes: int | None  # lanes of the refinement stream (exact entries)


class BucketRans(SeededCoding):
    name = "bucket-rans"
    since = 2

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> BucketParams:
        seed, lanes, bound = parse_seeded(fields, meta)
        name = meta.name
        bits, exact, weights = fields.get("bits"), fields.get("exact"), fields.get("weights")
        if not (is_int(bits) and 1 <= bits <= buckets.MAX_BITS and isinstance(exact, bool)):
            raise FormatError(f"tensor {name!r}: malformed bucket-rans entry")
        k = 1 << bits
        if weights is None:
            table = np.ones(2 * k - 1, dtype=np.int64)
        elif (
            isinstance(weights, list)
            and len(weights) == 2 * k - 1
            and all(is_int(v) and 1 <= v <= buckets.max_weight(seed.m) for v in weights)
        ):
            table = np.asarray(weights, dtype=np.int64)
        else:
            raise FormatError(f"tensor {name!r}: bad context weights for {bits} bits")
        words = fields.get("words")
        if words is not None and not (is_int(words) and words >= 0):
            raise FormatError(f"tensor {name!r}: payload too short for {words!r} words")
        refine = parse_lanes(fields.get("refine_lanes"), name, seed.rows) if exact else None
        return BucketParams(meta, seed, lanes, bound, bits, exact, table, words, refine)

    def largest_run(self, params: BucketParams) -> int:
        lanes = max(params.lanes, params.refine_lanes or 1)
        return runs.group_run_values(params.seed.rows, params.seed.m, lanes)

    def working_bytes(self, params: BucketParams) -> int:
        """The largest run's working set and, with a refinement, the bucket of every value
        (what the compiled decoder keeps for it)."""
        rows_m = params.seed.rows * params.seed.m if params.exact else 0
        return super().working_bytes(params) + rows_m

    def lossless(self, params: BucketParams) -> bool:
        return params.exact

    def describe(self, params: BucketParams) -> dict[str, Any]:
        return {"lanes": params.lanes, "bits": params.bits, "exact": params.exact}

    def decode(self, params: BucketParams, payload: bytes) -> np.ndarray:
        """The bucket layer, then the refinement stream or the initial-rank rule; each
        stream a run of its own groups at a time."""
        compiled = runs.decode_compiled(
            self.name, params, payload, bits=params.bits, exact=params.exact,
            weights=params.weights, words=params.words, refine_lanes=params.refine_lanes or 0,
        )  # fmt: skip
        if compiled is not None:
            return compiled
        meta, seed = params.meta, params.seed
        name, rows, m, bits = meta.name, seed.rows, seed.m, params.bits
        states, words, end = split_rans(name, payload, 0, params.lanes, params.words, rows)
        if rows * m == 0:  # the reference checks that the bucket stream is empty
            empty = np.zeros((rows, m), np.int64)
            k = np.zeros((rows, 1 << bits), np.int64)
            rans.decode_ctx(states, words, empty, k, params.weights, name)
            return np.empty(meta.shape, dtype=storage_dtype(meta.dtype))
        if not params.exact and end != len(payload):
            raise FormatError(f"tensor {name!r}: {len(payload) - end} bytes after the stream")
        init = runs.SeededRows(seed.spec, seed.key, meta.shape, meta.dtype, name)
        layer = runs.Stream(states, words, rows, m, name)
        if not params.exact:
            return _lossy_rows(init, layer, bits, params.weights).reshape(meta.shape)
        refine_states, refine_words, _ = split_rans(
            name, payload, end, params.refine_lanes, None, rows
        )
        refine = runs.Stream(refine_states, refine_words, rows, m, name)
        return _exact_rows(init, layer, refine, bits, params.weights).reshape(meta.shape)


def _lossy_rows(
    init: runs.SeededRows, layer: runs.Stream, bits: int, weights: np.ndarray
) -> np.ndarray:
    """Rows rebuilt from their buckets alone (FORMAT 5.4), a run of the bucket
    stream's groups at a time."""

    def run(r0: int, r1: int) -> np.ndarray:
        rc, bk = init.buckets(r0, r1, bits)
        sym = layer.symbols(r1, bk.init_ctx, bk.counts, weights)
        return arrangement.rebuild(buckets.rebuild_lossy_cls(sym, bk, rc), rc)

    return runs.fill_rows(layer.rows, layer.m, storage_dtype(init.dtype), layer.runs(), run)


def _exact_rows(
    init: runs.SeededRows,
    layer: runs.Stream,
    refine: runs.Stream,
    bits: int,
    weights: np.ndarray,
) -> np.ndarray:
    """Rows from their buckets and the refinement stream, each row's init generated
    once. The two streams group rows by different lanes, so the refinement stream's
    runs drive and the bucket stream decodes ahead as far as each one needs."""
    out = runs.LazyRows(layer.rows, layer.m, storage_dtype(init.dtype))
    refine_runs = refine.runs()
    ahead = _BucketsAhead(init, layer, refine_runs, bits, weights)
    for r0, r1 in refine_runs:
        rc, counts, sym = ahead.take(r0, r1)
        seq = refine.classes(r1, rc.counts, buckets.bucket_major_totals(counts))
        values = runs.place_refined(seq, sym, rc, 1 << bits)
        if values is None:
            values = arrangement.rebuild(buckets.unrefine(seq, sym), rc)
        out.put(r0, r1, values)
    return out.result()


class _BucketsAhead:
    """The init classes and buckets of the refinement stream's runs, generated in its
    order, and the bucket symbols decoded from them a bucket-stream run at a time;
    each part is kept until the run that needs it last has taken it."""

    def __init__(
        self,
        init: runs.SeededRows,
        layer: runs.Stream,
        refine_runs: list[tuple[int, int]],
        bits: int,
        weights: np.ndarray,
    ) -> None:
        self.init, self.layer, self.bits, self.weights = init, layer, bits, weights
        self.todo = iter(refine_runs)
        self.bucket_runs = iter(layer.runs())
        self.classes: list[tuple[int, arrangement.RowClasses, np.ndarray]] = []
        self.ctx, self.counts, self.sym = runs.RowParts(), runs.RowParts(), runs.RowParts()

    def take(self, r0: int, r1: int) -> tuple[arrangement.RowClasses, np.ndarray, np.ndarray]:
        """Classes, values per bucket and bucket symbols of rows r0..r1-1 (the next
        refinement run)."""
        while self.sym.end < r1:
            b0, b1 = next(self.bucket_runs)
            while self.ctx.end < b1:
                self._generate()
            sym = self.layer.symbols(
                b1, self.ctx.rows(b0, b1), self.counts.rows(b0, b1), self.weights
            )
            self.sym.add(b0, sym)
            self.ctx.drop(b1)
            self.counts.drop(b1)
        start, rc, counts = self.classes.pop(0)
        if start != r0 or rc.values.shape[0] != r1 - r0:
            raise AssertionError("refinement runs out of order")  # cannot happen
        sym = self.sym.rows(r0, r1)
        self.sym.drop(r1)
        if rc.counts is None:
            rc = dataclasses.replace(rc, counts=np.ones(rc.values.shape, dtype=np.int64))
        return rc, counts, sym

    def _generate(self) -> None:
        r0, r1 = next(self.todo)
        # the refinement needs only the classes' values and counts (None in rows of
        # distinct values: all ones, made again when taken): held until then
        rc, per_bucket, init_ctx = self.init.bucket_counts(r0, r1, self.bits)
        self.classes.append((r0, rc, per_bucket))
        self.ctx.add(r0, init_ctx)
        self.counts.add(r0, per_bucket)


# ---------------------------------------------------------------- encoding

Context = tuple[buckets.Buckets, np.ndarray, np.ndarray]


def choose_refine_bits(
    cls: np.ndarray, rc: arrangement.RowClasses, init_cls: np.ndarray, bound: float
) -> Context | None:
    """(buckets, symbols, weights) of the bucket depth whose context model saves most
    over ``bound``, if it saves at least ``REFINE_MIN_GAIN`` of it (estimated with the
    static model). The depth is chosen on at most :data:`SEARCH_VALUES` values (rows
    spread over the tensor, their savings scaled to the whole), and the search stops at
    the first depth that saves nothing: rows with no memory of their initial ranks save
    nothing at any depth."""
    rows, m = cls.shape
    picks = np.linspace(0, rows - 1, max(1, min(rows, SEARCH_VALUES // m))).round()
    idx = np.unique(picks).astype(np.int64)
    if idx.size == rows:
        best = _best_depth(cls, rc, init_cls, bound, 1.0)
        return None if best is None else best[1]
    part = dataclasses.replace(
        rc,
        counts=rc.counts[idx],
        values=rc.values[idx],
        sorted_keys=rc.sorted_keys[idx],
        class_of_sorted=rc.class_of_sorted[idx],
    )
    best = _best_depth(cls[idx], part, init_cls[idx], bound, rows / idx.size)
    if best is None:
        return None
    context, saved, table = _context(cls, rc, init_cls, best[0])
    return context if saved - table > REFINE_MIN_GAIN * bound else None


def _best_depth(
    cls: np.ndarray,
    rc: arrangement.RowClasses,
    init_cls: np.ndarray,
    bound: float,
    scale: float,
) -> tuple[int, Context] | None:
    """The depth of :data:`REFINE_BITS` that saves most (what these rows save, times
    ``scale``, less the table), and its context, if that is more than
    ``REFINE_MIN_GAIN`` of ``bound``."""
    best, best_gain = None, REFINE_MIN_GAIN * bound
    for bits in REFINE_BITS:
        if (1 << bits) > cls.shape[1]:
            break
        context, saved, table = _context(cls, rc, init_cls, bits)
        gain = saved * scale - table
        if gain <= 0:
            break
        if gain > best_gain:
            best, best_gain = (bits, context), gain
    return best


def _context(
    cls: np.ndarray, rc: arrangement.RowClasses, init_cls: np.ndarray, bits: int
) -> tuple[Context, float, float]:
    """Buckets, symbols and fitted weights at ``bits``; the bits the context model
    saves over the bound of the bucket counts (estimated with the static model), and
    the bits of its weight table."""
    bk = buckets.bucketize(rc, init_cls, bits)
    sym = buckets.symbols(cls, bk)
    weights = buckets.fit_weights(sym, bk.init_ctx, bits)
    est = buckets.ctx_cost_estimate(sym, bk.init_ctx, weights, bk.k)
    saved = arrangement.bound_bits(bk.counts) - est
    return (bk, sym, weights), saved, buckets.table_bits(weights)


def _bucket_layer(
    sym: np.ndarray, bk: buckets.Buckets, weights: np.ndarray | None
) -> tuple[dict[str, Any], bytes]:
    """Entry fields and bytes of the bucket layer (context-coded bucket symbols)."""
    rows = sym.shape[0]
    w = weights if weights is not None else np.ones(2 * bk.k - 1, dtype=np.int64)
    est = buckets.ctx_cost_estimate(sym, bk.init_ctx, w, bk.k)
    lanes = rans.choose_lanes(rows, est, sym.shape[1])
    states, words = rans.encode_ctx(sym, bk.init_ctx, bk.counts, w, lanes)
    fields = {
        "coding": BucketRans.name,
        "bits": bk.bits,
        "exact": False,
        "weights": None if weights is None else [int(v) for v in weights],
        "lanes": lanes,
        "words": int(words.shape[0]),
    }
    return fields, rans_bytes(states, words)


def encode_exact(
    cls: np.ndarray, rc: arrangement.RowClasses, context: Context, bound: float
) -> tuple[dict[str, Any], bytes]:
    """Fields and payload of the lossless form: bucket layer plus refinement stream."""
    bk, sym, weights = context
    fields, head = _bucket_layer(sym, bk, weights)
    seq, totals = buckets.refinement(cls, sym, bk)
    rows, m = cls.shape
    refine_lanes = rans.choose_lanes(rows, bound - arrangement.bound_bits(bk.counts), m)
    tail = rans_bytes(*rans.encode(seq, rc.counts, refine_lanes, totals))
    fields.update(exact=True, refine_lanes=refine_lanes, bound_bits=bound)
    return fields, head + tail


def encode_lossy(
    cls: np.ndarray, rc: arrangement.RowClasses, init_cls: np.ndarray, bits: int
) -> tuple[dict[str, Any], bytes, np.ndarray]:
    """Bucket layer only; also returns the classes the decoder will rebuild. The context
    table is kept only when it pays for itself."""
    bk = buckets.bucketize(rc, init_cls, bits)
    sym = buckets.symbols(cls, bk)
    weights = buckets.fit_weights(sym, bk.init_ctx, bits)
    est = buckets.ctx_cost_estimate(sym, bk.init_ctx, weights, bk.k)
    if est + buckets.table_bits(weights) >= arrangement.bound_bits(bk.counts):
        weights = None
    fields, payload = _bucket_layer(sym, bk, weights)
    return fields, payload, buckets.rebuild_lossy_cls(sym, bk, rc)
