"""``perm-rans`` and ``bucket-rans`` decoded a run of whole groups at a time, ``row-rans``
a run of whole lanes or of one lane's rows: the same bits as one-shot decoding (kernels
and reference alike), the same errors on damage, and a hostile entry that claims a huge
tensor fails in its first run without the memory."""

from __future__ import annotations

import contextlib
import itertools
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from permcodec import FormatError, IntegrityError, kernels
from permcodec.coding import arrangement, buckets, rans, runs
from permcodec.coding.base import rans_bytes
from permcodec.core.dtypes import order_keys
from permcodec.core.initializers import InitSpec, fans, initial_rows, row_shape
from permcodec.core.plan import Plan
from permcodec.format.container import section_digest
from permcodec.format.reader import decode_tensor

SPECS = [
    InitSpec("he_uniform"),
    InitSpec("he_normal", density=0.3),
    InitSpec("constant", value=0.08, random_sign=True, density=0.6),
    InitSpec("uniform", a=-1.0, b=1.0, granularity="tensor"),  # one row
]
CODINGS = ["perm-rans", "bucket-lossy", "bucket-exact"]


@contextlib.contextmanager
def _coders(reference: bool) -> Iterator[None]:
    """Run the rANS decoders on the numpy reference (``PERMCODEC_PURE_NUMPY=1``) or on
    the compiled kernels."""
    with pytest.MonkeyPatch.context() as mp:
        if reference:
            mp.setenv(kernels.PURE_NUMPY_ENV, "1")
        else:
            if kernels.load("rans") is None:
                pytest.skip("no compiled rANS kernels in this install")
            mp.delenv(kernels.PURE_NUMPY_ENV, raising=False)
        yield


@contextlib.contextmanager
def _chunk(values: int) -> Iterator[None]:
    """Seeded decoders take runs of about ``values`` values (those of permcodec.coding.runs:
    the compiled whole-tensor decoder's runs are fixed)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs, "DECODE_CHUNK", values)
        mp.setattr(runs, "COMPILED", False)
        yield


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", result bytes) or ("error", error type and message)."""
    try:
        out = fn()
    except (IntegrityError, FormatError) as e:
        return "error", (type(e).__name__, str(e))
    return "ok", out.tobytes() if isinstance(out, np.ndarray) else out


# ---------------------------------------------------------------- rans: runs of groups


def _runs(data: st.DataObject, rows: int, lanes: int) -> list[tuple[int, int]]:
    """Rows cut into runs of whole groups (the last run takes the rest)."""
    groups = -(-rows // lanes)
    cuts = data.draw(st.sets(st.integers(1, groups - 1), max_size=4)) if groups > 1 else set()
    bounds = [0, *(c * lanes for c in sorted(cuts)), rows]
    return list(itertools.pairwise(bounds))


def _damage(data: st.DataObject, states: np.ndarray, words: np.ndarray) -> tuple:
    """The stream unchanged or with one kind of damage (states may leave their range)."""
    kind = data.draw(st.sampled_from(["none", "cut", "flip_word", "flip_state", "extra"]))
    states, words = states.copy(), words.copy()
    if kind == "cut" and words.size:
        words = words[: data.draw(st.integers(0, words.size - 1))]
    elif kind == "flip_word" and words.size:
        words[data.draw(st.integers(0, words.size - 1))] ^= np.uint32(
            1 << data.draw(st.integers(0, 31))
        )
    elif kind == "flip_state":
        states[data.draw(st.integers(0, states.size - 1))] ^= np.uint64(
            1 << data.draw(st.integers(0, 63))
        )
    elif kind == "extra":
        words = np.append(words, np.uint32(7))
    return states, words


def _decode_runs(
    decode_run: Callable[..., tuple[np.ndarray, np.ndarray, int]],
    states: np.ndarray,
    words: np.ndarray,
    runs: list[tuple[int, int]],
    run_args: Callable[[int, int], tuple[Any, ...]],
) -> tuple[np.ndarray, np.ndarray, int]:
    """Symbols of all rows decoded run after run (states and position carried), the
    final states and position."""
    pos, parts = 0, []
    for r0, r1 in runs:
        final = r1 == runs[-1][1]
        sym, states, pos = decode_run(states, words, *run_args(r0, r1), pos=pos, final=final)
        parts.append(sym)
    return np.concatenate(parts), states, pos


def _all_agree(one_shot: Callable[[], Any], chunked: Callable[[], Any]) -> None:
    """One-shot and run-by-run decoding, each on kernels and reference, agree."""
    outcomes = set()
    for reference in (False, True):
        with _coders(reference):
            outcomes.add(_outcome(one_shot))
            outcomes.add(_outcome(chunked))
    assert len(outcomes) == 1, outcomes


def _multiset_rows(
    data: st.DataObject, rng: np.random.Generator, rows: int, m: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class rows and, for rows coded in two segments (the low classes first, as the
    refinement stream does), the remaining total of the current segment at each step."""
    kind = data.draw(st.sampled_from(["distinct", "repeats", "segments"]), label="rows")
    if kind == "distinct":
        return np.stack([rng.permutation(m) for _ in range(rows)]), None
    raw = rng.integers(0, data.draw(st.integers(1, m), label="classes"), (rows, m))
    if kind == "repeats":
        return raw, None
    low = raw < int(raw.max() + 1) // 2
    order = np.argsort(np.where(low, 0.0, 1.0) + 0.5 * rng.random((rows, m)), axis=1)
    n_low = low.sum(axis=1, keepdims=True)
    j = np.arange(m)[None, :]
    return np.take_along_axis(raw, order, axis=1), np.where(j < n_low, n_low - j, m - j)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_multiset_stream_decodes_run_by_run(data):
    rows = data.draw(st.integers(1, 10), label="rows")
    m = data.draw(st.integers(1, 30), label="m")
    lanes = data.draw(st.integers(1, rows), label="lanes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    cls, totals = _multiset_rows(data, rng, rows, m)
    counts = np.stack([np.bincount(r, minlength=m) for r in cls]).astype(np.int64)
    states, words = rans.encode(cls, counts, lanes, totals)
    runs = _runs(data, rows, lanes)

    def run_args(a: int, b: int) -> tuple:
        return counts[a:b], m, "t", None if totals is None else totals[a:b]

    for reference in (False, True):
        with _coders(reference):
            out, end_states, pos = _decode_runs(rans.decode_run, states, words, runs, run_args)
        assert np.array_equal(out, cls)
        assert pos == words.size and (end_states == rans.STATE_LOW).all()

    states, words = _damage(data, states, words)
    if data.draw(st.booleans(), label="wrong counts"):
        counts = counts.copy()
        counts[data.draw(st.integers(0, rows - 1))] = np.bincount(
            rng.integers(0, m, m), minlength=m
        )
    _all_agree(
        lambda: rans.decode(states, words, counts, m, "t", totals),
        lambda: _decode_runs(rans.decode_run, states, words, runs, run_args)[0],
    )


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_context_stream_decodes_run_by_run(data):
    rows = data.draw(st.integers(1, 10), label="rows")
    k = 1 << data.draw(st.integers(0, 5), label="bits")
    m = data.draw(st.integers(1, 40), label="m")
    lanes = data.draw(st.integers(1, rows), label="lanes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    sym = rng.integers(0, k, (rows, m))
    ctx = np.clip(sym + rng.integers(-1, 2, (rows, m)), 0, k - 1)
    counts = np.stack([np.bincount(r, minlength=k) for r in sym]).astype(np.int64)
    weights = rng.integers(1, buckets.max_weight(m) + 1, 2 * k - 1)
    states, words = rans.encode_ctx(sym, ctx, counts, weights, lanes)
    runs = _runs(data, rows, lanes)

    def run_args(a: int, b: int) -> tuple:
        return ctx[a:b], counts[a:b], weights, "t"

    for reference in (False, True):
        with _coders(reference):
            out, end_states, pos = _decode_runs(rans.decode_ctx_run, states, words, runs, run_args)
        assert np.array_equal(out, sym)
        assert pos == words.size and (end_states == rans.STATE_LOW).all()

    states, words = _damage(data, states, words)
    _all_agree(
        lambda: rans.decode_ctx(states, words, ctx, counts, weights, "t"),
        lambda: _decode_runs(rans.decode_ctx_run, states, words, runs, run_args)[0],
    )


def test_a_run_must_be_whole_groups_and_start_inside_the_stream():
    cls = np.array([[0, 1], [1, 0], [0, 1]])
    counts = np.ones((3, 2), dtype=np.int64)
    states, words = rans.encode(cls, counts, 2)
    with pytest.raises(ValueError, match="whole groups"):
        rans.decode_run(states, words, counts[:1], 2, final=False)
    with pytest.raises(ValueError, match="outside the stream"):
        rans.decode_run(states, words, counts, 2, pos=words.size + 1)


# ---------------------------------------------------------------- tensors


def _entry(
    coding: str,
    spec: InitSpec,
    shape: tuple[int, int],
    dtype: str,
    lanes: int,
    seed: int = 0,
) -> tuple[dict[str, Any], bytes, np.ndarray]:
    """A ``perm-rans``, ``row-rans`` or ``bucket-rans`` entry (lossy or exact, 3 bits)
    of a tensor whose ranks stay near the init's, made with the encoders (at most one
    lane per row); its payload and the tensor its decoder must rebuild."""
    tp = Plan(seed).add("w", spec, shape)
    init = initial_rows(tp.spec, tp.key, shape, dtype)
    rows, m = init.shape
    lanes = max(1, min(lanes, rows))
    keys = order_keys(init, dtype)
    rc = arrangement.row_classes(init, keys)
    rng = np.random.default_rng(seed)
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1)
    order = np.argsort(rank + rng.normal(0, 0.1 * m, (rows, m)), axis=1, kind="stable")
    trained_keys = np.empty_like(keys)
    np.put_along_axis(trained_keys, order, np.sort(keys, axis=1), axis=1)
    cls = arrangement.classes_of(trained_keys, rc)
    entry: dict[str, Any] = {
        "name": "w",
        "shape": list(shape),
        "dtype": dtype,
        "spec": dict(tp.spec),
        "key": list(tp.key),
        "lanes": lanes,
    }
    if coding == "perm-rans":
        entry["coding"] = coding
        payload = rans_bytes(*rans.encode(cls, rc.counts, lanes))
    elif coding == "row-rans":
        entry["coding"] = coding
        payload = rans_bytes(*rans.encode_rows(cls, rc.counts, lanes))
    else:
        bk = buckets.bucketize(rc, arrangement.classes_of(keys, rc), 3)
        sym = buckets.symbols(cls, bk)
        weights = buckets.fit_weights(sym, bk.init_ctx, 3)
        states, words = rans.encode_ctx(sym, bk.init_ctx, bk.counts, weights, lanes)
        payload = rans_bytes(states, words)
        entry.update(
            coding="bucket-rans",
            bits=3,
            exact=coding == "bucket-exact",
            weights=[int(v) for v in weights],
            words=int(words.size),
        )
        if coding == "bucket-exact":
            seq, totals = buckets.refinement(cls, sym, bk)
            refine_lanes = lanes % max(rows, 1) + 1  # grouped unlike the bucket stream
            payload += rans_bytes(*rans.encode(seq, rc.counts, refine_lanes, totals))
            entry["refine_lanes"] = refine_lanes
        else:
            cls = buckets.rebuild_lossy_cls(sym, bk, rc)
    out = arrangement.rebuild(cls, rc)
    entry["digest"] = section_digest(out)
    return _sealed(entry, payload), payload, out


def _sealed(entry: dict[str, Any], payload: bytes) -> dict[str, Any]:
    return dict(entry, payload_digest=section_digest(payload), offset=0, length=len(payload))


@pytest.mark.slow
@settings(max_examples=120, deadline=None)
@given(
    coding=st.sampled_from([*CODINGS, "row-rans"]),
    spec=st.sampled_from(SPECS),
    dtype=st.sampled_from(["float32", "float16"]),
    rows=st.integers(1, 40),
    m=st.integers(1, 90),
    lanes=st.integers(1, 5),
    chunk=st.integers(1, 600),
    reference=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_small_runs_decode_the_same_tensor(
    coding, spec, dtype, rows, m, lanes, chunk, reference, seed
):
    entry, payload, want = _entry(coding, spec, (rows, m), dtype, lanes, seed)
    with _coders(reference):
        whole = decode_tensor(entry, payload)
        with _chunk(chunk):
            runs = decode_tensor(entry, payload)
    assert whole.tobytes() == runs.tobytes() == want.tobytes()


@pytest.mark.parametrize("reference", [False, True], ids=["kernels", "reference"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("coding", CODINGS)
def test_many_runs_of_several_lanes_are_bit_exact(coding, dtype, reference):
    entry, payload, want = _entry(coding, SPECS[0], (45, 40), dtype, 4)
    with _coders(reference):
        for chunk in (1, 500, runs.DECODE_CHUNK):
            with _chunk(chunk):
                assert decode_tensor(entry, payload).tobytes() == want.tobytes()


def _word_spans(entry: dict[str, Any], payload: bytes) -> list[tuple[int, int]]:
    """Byte spans of the words of each rANS stream of a payload (FORMAT 4.3.1, 4.4.1)."""
    start = 8 * entry["lanes"]
    if entry["coding"] == "perm-rans":
        return [(start, len(payload))]
    end = start + 4 * entry["words"]
    if not entry["exact"]:
        return [(start, end)]
    return [(start, end), (end + 8 * entry["refine_lanes"], len(payload))]


def _edited(
    entry: dict[str, Any], payload: bytes, stream: int, edit: Callable[[np.ndarray], np.ndarray]
) -> tuple[dict[str, Any], bytes]:
    """The entry with the words of one stream edited; word count and digests follow,
    so only the decoder can object."""
    a, b = _word_spans(entry, payload)[stream]
    words = edit(np.frombuffer(payload[a:b], dtype="<u4").copy())
    bad = payload[:a] + words.astype("<u4").tobytes() + payload[b:]
    changed = dict(entry)
    if stream == 0 and "words" in entry:
        changed["words"] = int(words.size)
    return _sealed(changed, bad), bad


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(
    coding=st.sampled_from(CODINGS),
    damage=st.sampled_from(["cut", "flip"]),
    refinement=st.booleans(),
    data=st.data(),
)
def test_damaged_streams_fail_alike_in_runs_and_whole(coding, damage, refinement, data):
    entry, payload, _ = _entry(coding, SPECS[1], (30, 50), "float32", 3)
    stream = int(refinement and coding == "bucket-exact")

    def edit(words: np.ndarray) -> np.ndarray:
        i = data.draw(st.integers(0, words.size - 1), label="word")
        if damage == "cut":
            return words[:i]
        words[i] ^= np.uint32(1 << data.draw(st.integers(0, 31), label="bit"))
        return words

    bad_entry, bad = _edited(entry, payload, stream, edit)
    outcomes = set()
    for reference in (False, True):
        with _coders(reference):
            for chunk in (1, runs.DECODE_CHUNK):
                with _chunk(chunk):
                    outcomes.add(_outcome(lambda: decode_tensor(bad_entry, bad)))
    assert len(outcomes) == 1, outcomes
    assert next(iter(outcomes))[0] == "error"


@pytest.mark.parametrize("shape", [(0, 5), (3, 0)])
@pytest.mark.parametrize("coding", CODINGS)
def test_empty_tensors_decode_and_refuse_coded_data(coding, shape):
    entry, payload, want = _entry(coding, SPECS[0], shape, "float32", 1)
    assert decode_tensor(entry, payload).shape == shape == want.reshape(shape).shape
    bad_entry, bad = _edited(entry, payload, 0, lambda w: np.append(w, np.uint32(1)))
    with pytest.raises(IntegrityError, match="an empty tensor has coded data"):
        decode_tensor(bad_entry, bad)


@pytest.mark.parametrize("reference", [False, True], ids=["kernels", "reference"])
@pytest.mark.parametrize(
    ("coding", "lanes", "shape"),
    [*((c, 2, (8192, 8192)) for c in CODINGS), ("row-rans", 1, (8192, 4096))],
)
def test_a_tiny_entry_claiming_a_huge_tensor_fails_fast_in_little_memory(
    coding, lanes, shape, reference
):
    """A valid 16 x 64 entry relabelled as 8192 x 8192 (2**26 float32 values, 256 MiB;
    fans changed so that the spec validates) with its payload of a few hundred bytes:
    the first run of rows finds the stream wrong. The decoders allocate their output
    only after a first run decoded, so tracemalloc (which counts numpy's allocations,
    np.empty's untouched pages included) sees one run's working set, not 256 MiB.
    ``row-rans`` with one lane (2**25 values, 128 MiB): the lane's first sub-run."""
    entry, payload, want = _entry(coding, SPECS[0], (16, 64), "float32", lanes)
    spec = dict(entry["spec"])
    spec["fan_in"], spec["fan_out"] = fans(shape)
    hostile = dict(entry, shape=list(shape), spec=spec)
    with _coders(reference):
        assert decode_tensor(entry, payload).tobytes() == want.tobytes()  # warm up
        tracemalloc.start()
        try:
            start = time.perf_counter()
            with pytest.raises((IntegrityError, FormatError)):
                decode_tensor(hostile, payload)
            elapsed = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 64 << 20, f"peak {peak / 2**20:.1f} MiB"


# ---------------------------------------------------------------- row-rans: sub-runs of a lane


def _lane_rows(bounds: np.ndarray, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows t0..t1-1 of every lane (counted from its first row; fewer where it ends):
    the row indices, lane after lane, and the bounds of each lane's part of them."""
    a = np.minimum(bounds[:-1] + t0, bounds[1:])
    b = np.minimum(bounds[:-1] + t1, bounds[1:])
    rows = np.concatenate([np.arange(x, y, dtype=np.int64) for x, y in zip(a, b, strict=True)])
    return rows, np.concatenate([[0], np.cumsum(b - a)]).astype(np.int64)


def _decode_lanes_in_runs(
    states: np.ndarray,
    lengths: np.ndarray,
    words: np.ndarray,
    counts: np.ndarray,
    m: int,
    runs: list[tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes of all rows decoded run by run, run (t0, t1) taking rows t0..t1-1 of
    every lane (states and word positions carried); the final states and positions."""
    bounds = rans.lane_bounds(counts.shape[0], states.shape[0])
    out = np.empty((counts.shape[0], m), dtype=np.int64)
    used = None
    for t0, t1 in runs:
        rows, run_bounds = _lane_rows(bounds, t0, t1)
        final = t1 == runs[-1][1]
        cls, states, used = rans.decode_rows_run(
            states, lengths, words, counts[rows], m, "t", run_bounds, used=used, final=final
        )
        out[rows] = cls
    return out, states, used


def _segment_damage(
    data: st.DataObject, kind: str, states: np.ndarray, lengths: np.ndarray, words: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``row-rans`` stream unchanged or with one kind of damage to one lane: its
    segment cut short or one more word, a word's or its state's bit flipped (lengths
    follow the words)."""
    states, lengths, words = states.copy(), lengths.copy(), words.copy()
    lane = data.draw(st.integers(0, states.size - 1), label="lane")
    start, size = int(lengths[:lane].sum()), int(lengths[lane])
    if kind == "flip_state" or (kind in ("cut", "flip_word") and not size):
        states[lane] ^= np.uint64(1 << data.draw(st.integers(0, 63), label="bit"))
    elif kind == "cut":
        keep = data.draw(st.integers(0, size - 1), label="keep")
        words = np.delete(words, np.arange(start + keep, start + size))
        lengths[lane] = keep
    elif kind == "flip_word":
        at = start + data.draw(st.integers(0, size - 1), label="word")
        words[at] ^= np.uint32(1 << data.draw(st.integers(0, 31), label="bit"))
    elif kind == "extra":
        words = np.insert(words, start + size, np.uint32(7))
        lengths[lane] += 1
    return states, lengths, words


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_row_segments_decode_run_by_run_inside_lanes(data):
    rows = data.draw(st.integers(1, 12), label="rows")
    m = data.draw(st.integers(1, 40), label="m")
    lanes = data.draw(st.integers(1, rows), label="lanes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    repeats = data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows), label="repeats")
    cls = np.stack(
        [rng.integers(0, max(1, m // 3), m) if r else rng.permutation(m) for r in repeats]
    )
    counts = np.stack([np.bincount(r, minlength=m) for r in cls]).astype(np.int64)
    states, lengths, words = rans.encode_rows(cls, counts, lanes)
    bounds = rans.lane_bounds(rows, lanes)
    runs = _runs(data, int(np.diff(bounds).max()), 1)  # rounds of every lane's rows

    for reference in (False, True):
        with _coders(reference):
            out, end_states, used = _decode_lanes_in_runs(states, lengths, words, counts, m, runs)
        assert np.array_equal(out, cls)
        assert np.array_equal(used, lengths) and (end_states == rans.STATE_LOW).all()

    kind = data.draw(st.sampled_from(["none", "cut", "flip_word", "flip_state", "extra"]))
    states, lengths, words = _segment_damage(data, kind, states, lengths, words)
    _all_agree(
        lambda: rans.decode_rows(states, lengths, words, counts, m, "t"),
        lambda: _decode_lanes_in_runs(states, lengths, words, counts, m, runs)[0],
    )


def test_a_lane_resumes_only_inside_its_segment():
    cls = np.array([[0, 1], [1, 0], [0, 1]])
    counts = np.ones((3, 2), dtype=np.int64)
    states, lengths, words = rans.encode_rows(cls, counts, 1)
    with pytest.raises(ValueError, match="outside the segments"):
        rans.decode_rows_run(states, lengths, words, counts, 2, used=lengths + 1)


@pytest.mark.parametrize("reference", [False, True], ids=["kernels", "reference"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("spec", SPECS[:3], ids=["dense", "sparse", "two-value"])
@pytest.mark.parametrize("lanes", [1, 3])
def test_row_rans_lanes_of_many_rows_are_bit_exact_in_sub_runs(
    lanes, spec, dtype, reference, monkeypatch
):
    """40 rows of 30 values in 1 or 3 lanes (13 to 40 rows each): one row per sub-run,
    a few rows, lanes split and whole lanes side by side, and the default."""
    entry, payload, want = _entry("row-rans", spec, (40, 30), dtype, lanes)
    with _coders(reference):
        for threads, chunk in itertools.product(("1", "3"), (1, 45, 100, 395, runs.DECODE_CHUNK)):
            monkeypatch.setenv("PERMCODEC_THREADS", threads)
            with _chunk(chunk):
                assert decode_tensor(entry, payload).tobytes() == want.tobytes()


def test_a_lane_of_many_rows_regenerates_its_init_a_sub_run_at_a_time(monkeypatch):
    entry, payload, want = _entry("row-rans", SPECS[0], (40, 30), "float32", 1)
    asked = []
    init_rows = initial_rows

    def spy(*args: Any, rows: tuple[int, int] | None = None) -> np.ndarray:
        asked.append(rows)
        return init_rows(*args, rows=rows)

    monkeypatch.setattr(runs, "initial_rows", spy)
    with _chunk(100):
        assert decode_tensor(entry, payload).tobytes() == want.tobytes()
    assert asked == [(r, min(40, r + 3)) for r in range(0, 40, 3)]


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(
    lanes=st.sampled_from([1, 3]),
    kind=st.sampled_from(["cut", "flip_word", "flip_state"]),
    data=st.data(),
)
def test_damaged_row_segments_fail_alike_in_sub_runs_and_whole(lanes, kind, data):
    entry, payload, _ = _entry("row-rans", SPECS[1], (30, 50), "float32", lanes)
    n = entry["lanes"]
    states = np.frombuffer(payload, "<u8", n)
    lengths = np.frombuffer(payload, "<u4", n, 8 * n)
    words = np.frombuffer(payload, "<u4", offset=12 * n)
    bad = rans_bytes(*_segment_damage(data, kind, states, lengths, words))
    bad_entry = _sealed(entry, bad)
    outcomes = set()
    for reference in (False, True):
        with _coders(reference):
            for chunk in (1, 120, runs.DECODE_CHUNK):
                with _chunk(chunk):
                    outcomes.add(_outcome(lambda: decode_tensor(bad_entry, bad)))
    assert len(outcomes) == 1, outcomes
    assert next(iter(outcomes))[0] == "error"


# ---------------------------------------------------------------- bucket-rans: the init's buckets


@settings(max_examples=60, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    dtype=st.sampled_from(["float32", "float16", "bfloat16", "float64"]),
    rows=st.integers(1, 12),
    m=st.integers(2, 300),
    bits=st.integers(1, 6),
    reference=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_init_buckets_a_decoder_uses_are_those_of_the_classes(
    spec, dtype, rows, m, bits, reference, seed
):
    """The classes, values per bucket and bucket of every position that the lossless
    bucket decoder takes of a run of init rows (compiled in one pass, or the numpy
    reference) are those of :func:`arrangement.init_classes` and :func:`buckets.bucketize`,
    in rows of distinct values, with repeats, and of a few values."""
    tp = Plan(seed).add("w", spec, (rows, m))
    init = runs.SeededRows(dict(tp.spec), tp.key, (rows, m), dtype, "w")
    r0, r1 = 0, row_shape((rows, m), tp.spec["granularity"])[0]
    rc, bk = init.buckets(r0, r1, bits)
    with _coders(reference):
        got, per_bucket, ctx = init.bucket_counts(r0, r1, bits)
    assert got.distinct == rc.distinct
    assert (got.counts is None) == rc.distinct
    if not rc.distinct:
        assert np.array_equal(got.counts, rc.counts)
    assert got.values.tobytes() == rc.values.tobytes()
    assert np.array_equal(per_bucket, bk.counts) and np.array_equal(ctx, bk.init_ctx)


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(["float32", "float16", "float64"]),
    rows=st.integers(1, 6),
    m=st.integers(1, 200),
    bits=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_refined_classes_are_placed_as_the_reference_places_them(dtype, rows, m, bits, seed):
    """Values placed from a bucket-major refinement in one compiled pass are the
    reference's (unrefine, then rebuild); a symbol or class out of range is left to the
    reference."""
    fast = kernels.load("rans")
    if fast is None or not hasattr(fast.impl, "place_refined_kernel"):
        pytest.skip("no compiled placing kernel")
    rng = np.random.default_rng(seed)
    k, n = 1 << bits, m + int(rng.integers(0, 3))
    sym = rng.integers(0, k, (rows, m))
    seq = rng.integers(0, n, (rows, m))
    values = rng.standard_normal((rows, n)).astype(dtype)
    rc = arrangement.RowClasses(None, values, None, None)
    want = arrangement.rebuild(buckets.unrefine(seq, sym), rc)
    assert fast.place_refined(seq, sym, values, k).tobytes() == want.tobytes()
    bad = sym.copy()
    bad[-1, -1] = k
    assert fast.place_refined(seq, bad, values, k) is None
    bad = seq.copy()
    bad[0, 0] = n
    assert fast.place_refined(bad, sym, values, k) is None


def test_sorted_words_with_a_position_out_of_range_are_refused():
    fast = kernels.load("rans")
    if fast is None or not hasattr(fast.impl, "init_buckets_kernel"):
        pytest.skip("no compiled init-buckets kernel")
    ok = np.array([[1, (1 << 32) | 0]], dtype=np.int64)  # keys 0, 1 at positions 1, 0
    counts, first, ctx, per_bucket, distinct = fast.init_buckets(ok, 2)
    assert counts.tolist() == [[1, 1]] and first.tolist() == [[0, 1]] and distinct
    assert ctx.tolist() == [[1, 0]] and per_bucket.tolist() == [[1, 1]]
    assert fast.init_buckets(np.array([[5, (1 << 32) | 7]], dtype=np.int64), 2) is None


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("exact", [False, True])
def test_a_payload_of_the_wrong_layout_is_malformed_before_its_states_are_read(reference, exact):
    """A bucket-rans payload with a state out of range and bytes its fields leave no room
    for: refused as malformed (the layout is checked before any state), by the compiled
    decoder and the reference alike."""
    tp = Plan(0).add("w", InitSpec("uniform", a=-1.0, b=1.0), (4, 4))
    entry = {
        "name": "w", "shape": [4, 4], "dtype": "float32", "coding": "bucket-rans",
        "spec": dict(tp.spec), "key": list(tp.key), "lanes": 1, "bits": 1, "exact": exact,
        "weights": None, "words": 0, "digest": bytes(16),
    }  # fmt: skip
    if exact:
        entry["refine_lanes"] = 1
    payload = bytes(8) + bytes(4)  # state 0, then 4 bytes: not a refinement stream either
    with _coders(reference), pytest.raises(FormatError) as e:
        decode_tensor(_sealed(entry, payload), payload)
    assert not isinstance(e.value, IntegrityError), e.value  # malformed, not damaged
