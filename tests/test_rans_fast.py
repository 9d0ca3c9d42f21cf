"""The compiled rANS kernels (C) against the numpy reference, byte for byte
(each backend skipped where it is not built or installed)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from permcodec import IntegrityError, kernels
from permcodec.coding import buckets, rans
from permcodec.kernels.rans_host import RansKernels

REF = rans.REFERENCE


def ref_encode(*args: Any) -> Any:
    return REF["encode"](*args)


def ref_encode_ctx(*args: Any) -> Any:
    return REF["encode_ctx"](*args)


def ref_decode(*args: Any) -> np.ndarray:
    return REF["decode_window"](*args)[0]


def ref_decode_ctx(*args: Any) -> np.ndarray:
    return REF["decode_ctx_window"](*args)[0]


def _backends() -> list[Any]:
    """One parameter per kernel backend, skipped where it does not import."""
    out = []
    for name in ("rans_c",):
        try:
            module = importlib.import_module(f"permcodec.kernels.{name}")
        except ImportError as e:
            out.append(pytest.param(None, id=name, marks=pytest.mark.skip(reason=str(e))))
        else:
            out.append(pytest.param(RansKernels(module), id=name))
    return out


each_backend = pytest.mark.parametrize("fast", _backends())


def fast_decode(fast: RansKernels, *args: Any) -> np.ndarray | None:
    out = fast.decode_window(*args)
    return None if out is None else out[0]


def fast_decode_ctx(fast: RansKernels, *args: Any) -> np.ndarray | None:
    out = fast.decode_ctx_window(*args)
    return None if out is None else out[0]


def public(fast: RansKernels, coder: Callable[..., Any]) -> Callable[..., Any]:
    """``coder`` (a public function of :mod:`permcodec.coding.rans`) run with only
    ``fast``'s backend allowed: its kernels, and the reference where they decline."""

    def run(*args: Any) -> Any:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(kernels.BACKENDS_ENV, fast.backend)
            return coder(*args)

    return run


@pytest.fixture(autouse=True, scope="module")
def _fast_path_on():
    """The public coders here must run the kernels, whatever the environment says."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(kernels.PURE_NUMPY_ENV, raising=False)
        yield


def _same_code(fast: tuple[np.ndarray, np.ndarray] | None, ref: tuple[np.ndarray, np.ndarray]):
    assert fast is not None, "the kernel left a valid input to the reference"
    assert fast[0].dtype == ref[0].dtype == np.uint64
    assert fast[1].dtype == ref[1].dtype == np.uint32
    assert fast[0].tobytes() == ref[0].tobytes()
    assert fast[1].tobytes() == ref[1].tobytes()


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except IntegrityError as e:
        return "error", str(e)


def _same_outcome(fast: Callable[..., Any], ref: Callable[..., Any], *args: Any) -> None:
    """Both decoders return equal symbols for ``args``, or both raise the same
    IntegrityError."""
    (kind_f, got_f), (kind_r, got_r) = _outcome(fast, args), _outcome(ref, args)
    assert kind_f == kind_r, (got_f, got_r)
    if kind_f == "error":
        assert got_f == got_r
    else:
        assert got_f is not None, "the kernel left the stream to the reference"
        assert got_f.dtype == got_r.dtype == np.int64
        assert np.array_equal(got_f, got_r)


def _damaged(
    data: st.DataObject, states: np.ndarray, words: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One kind of damage to a coded stream (a state may leave [2**31, 2**63): the
    public decoders then leave it to the reference, which rejects it)."""
    kind = data.draw(st.sampled_from(["cut", "drop", "flip_word", "flip_state", "extra"]))
    states, words = states.copy(), words.copy()
    if kind == "cut" and words.size:
        words = words[: data.draw(st.integers(0, words.size - 1))]
    elif kind == "drop" and words.size:
        words = np.delete(words, data.draw(st.integers(0, words.size - 1)))
    elif kind == "flip_word" and words.size:
        i = data.draw(st.integers(0, words.size - 1))
        words[i] ^= np.uint32(1 << data.draw(st.integers(0, 31)))
    elif kind == "flip_state":
        i = data.draw(st.integers(0, states.size - 1))
        states[i] ^= np.uint64(1 << data.draw(st.integers(0, 63)))
    else:
        words = np.append(words, np.uint32(data.draw(st.integers(0, 2**32 - 1))))
    return states, words


def _segmented_rows(
    rng: np.random.Generator, rows: int, m: int, n_cls: int, n_seg: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows visited segment by segment (classes of a segment contiguous), their class
    counts and the remaining count of the current segment at every step."""
    cuts = np.sort(rng.integers(0, n_cls + 1, n_seg - 1))
    seg_of = np.searchsorted(cuts, np.arange(n_cls), side="right")
    cls = np.empty((rows, m), dtype=np.int64)
    totals = np.empty((rows, m), dtype=np.int64)
    for r in range(rows):
        row = rng.integers(0, n_cls, m)
        row = row[np.argsort(seg_of[row], kind="stable")]
        seg = seg_of[row]
        for s in np.unique(seg):  # shuffle inside each segment
            at = np.nonzero(seg == s)[0]
            row[at] = rng.permutation(row[at])
        ends = np.cumsum(np.bincount(seg, minlength=n_seg))
        cls[r] = row
        totals[r] = ends[seg] - np.arange(m)
    counts = np.zeros((rows, n_cls), dtype=np.int64)
    for r in range(rows):
        counts[r] = np.bincount(cls[r], minlength=n_cls)
    return cls, counts, totals


# ---------------------------------------------------------------- multiset model


@settings(max_examples=200, deadline=None)
@given(data=st.data())
@each_backend
def test_multiset_coder_matches_reference(fast, data):
    rows = data.draw(st.integers(1, 9), label="rows")
    m = data.draw(st.integers(1, 50), label="m")
    n_cls = data.draw(st.integers(1, 70), label="classes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if data.draw(st.booleans(), label="segments"):
        n_seg = data.draw(st.integers(1, 5), label="segments")
        cls, counts, totals = _segmented_rows(rng, rows, m, n_cls, n_seg)
    else:
        cls = rng.integers(0, data.draw(st.integers(1, n_cls)), (rows, m))
        counts = np.stack([np.bincount(r, minlength=n_cls) for r in cls]).astype(np.int64)
        totals = None
    lanes = data.draw(st.integers(1, rows), label="lanes")

    ref = ref_encode(cls, counts, lanes, totals)
    _same_code(fast.encode(cls, counts, lanes, totals), ref)
    states, words = ref
    out = fast_decode(fast, states, words, counts, m, "t", totals)
    assert out is not None and np.array_equal(out, cls)
    damaged = _damaged(data, states, words)
    _same_outcome(public(fast, rans.decode), ref_decode, *damaged, counts, m, "t", totals)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
@each_backend
def test_totals_beyond_the_remaining_counts_match_reference(fast, data):
    """Segment totals larger than what remains of the counts (a damaged or hostile
    file's): a step's scaled state may then lie past every remaining value, which the
    decoders resolve as the reference's search does (the last class), updating their
    counts alike for the steps after it."""
    rows = data.draw(st.integers(1, 9), label="rows")
    m = data.draw(st.integers(1, 40), label="m")
    n_cls = data.draw(st.integers(1, 40), label="classes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n_seg = data.draw(st.integers(1, 5), label="segments")
    cls, counts, totals = _segmented_rows(rng, rows, m, n_cls, n_seg)
    lanes = data.draw(st.integers(1, rows), label="lanes")
    states, words = ref_encode(cls, counts, lanes, totals)
    raised = totals + rng.integers(0, data.draw(st.integers(1, 4)), totals.shape)
    _same_outcome(public(fast, rans.decode), ref_decode, states, words, counts, m, "t", raised)


@each_backend
def test_multiset_coder_on_a_wide_tensor_of_distinct_values(fast):
    rng = np.random.default_rng(5)
    rows, m = 37, 700
    cls = np.stack([rng.permutation(m) for _ in range(rows)])
    counts = np.ones((rows, m), dtype=np.int64)
    for lanes in (1, 5, 16, 37):
        ref = ref_encode(cls, counts, lanes)
        _same_code(fast.encode(cls, counts, lanes), ref)
        assert np.array_equal(fast_decode(fast, *ref, counts, m), cls)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
@each_backend
def test_rows_of_distinct_values_beside_rows_with_repeats_match_reference(fast, data):
    """The tree-free path for rows of m distinct values, mixed with rows that repeat
    values (as in wide float rows where a few values collide), also on damage."""
    rows = data.draw(st.integers(1, 12), label="rows")
    m = data.draw(st.integers(1, 80), label="m")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    repeats = data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows), label="repeats")
    cls = np.stack(
        [rng.integers(0, max(1, m - 2), m) if rep else rng.permutation(m) for rep in repeats]
    )
    counts = np.stack([np.bincount(r, minlength=m) for r in cls]).astype(np.int64)
    lanes = data.draw(st.integers(1, rows), label="lanes")

    ref = ref_encode(cls, counts, lanes)
    _same_code(fast.encode(cls, counts, lanes), ref)
    out = fast_decode(fast, *ref, counts, m, "t")
    assert out is not None and np.array_equal(out, cls)
    damaged = _damaged(data, *ref)
    _same_outcome(public(fast, rans.decode), ref_decode, *damaged, counts, m, "t")


@each_backend
def test_refinement_stream_of_real_buckets_matches_reference(fast):
    rng = np.random.default_rng(11)
    rows, m = 9, 120
    init = rng.normal(size=(rows, m)).astype(np.float32)
    init[:, ::7] = 0.0  # a class with many equal values
    from permcodec.coding.arrangement import classes_of, row_classes
    from permcodec.core.dtypes import order_keys

    keys = order_keys(init, "float32")
    rc = row_classes(init, keys)
    init_cls = classes_of(keys, rc)
    trained = np.stack([rng.permutation(r) for r in init])
    cls = classes_of(order_keys(trained, "float32"), rc)
    for bits in (1, 3, 5):
        bk = buckets.bucketize(rc, init_cls, bits)
        sym = buckets.symbols(cls, bk)
        seq, totals = buckets.refinement(cls, sym, bk)
        for lanes in (1, 4, rows):
            ref = ref_encode(seq, rc.counts, lanes, totals)
            _same_code(fast.encode(seq, rc.counts, lanes, totals), ref)
            out = fast_decode(fast, *ref, rc.counts, m, "w", totals)
            assert np.array_equal(out, seq)


# ---------------------------------------------------------------- context model


@settings(max_examples=150, deadline=None)
@given(data=st.data())
@each_backend
def test_context_coder_matches_reference(fast, data):
    rows = data.draw(st.integers(1, 8), label="rows")
    k = 1 << data.draw(st.integers(0, 6), label="bits")
    m = data.draw(st.integers(1, 60), label="m")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    used = data.draw(st.integers(1, k), label="buckets used")
    sym = rng.integers(0, used, (rows, m))
    counts = np.stack([np.bincount(r, minlength=k) for r in sym]).astype(np.int64)
    ctx = rng.integers(0, k, (rows, m))
    top = data.draw(st.sampled_from([1, 2, buckets.max_weight(m)]), label="top weight")
    weights = rng.integers(1, top + 1, 2 * k - 1)
    lanes = data.draw(st.integers(1, rows), label="lanes")

    ref = ref_encode_ctx(sym, ctx, counts, weights, lanes)
    _same_code(fast.encode_ctx(sym, ctx, counts, weights, lanes), ref)
    states, words = ref
    out = fast_decode_ctx(fast, states, words, ctx, counts, weights)
    assert out is not None and np.array_equal(out, sym)
    damaged = _damaged(data, states, words)
    _same_outcome(
        public(fast, rans.decode_ctx), ref_decode_ctx, *damaged, ctx, counts, weights, "t"
    )


@each_backend
def test_context_coder_with_256_buckets_matches_reference(fast):
    rng = np.random.default_rng(3)
    rows, m, k = 6, 784, 256
    init_ctx = np.stack([rng.permutation(np.arange(m) * k // m) for _ in range(rows)])
    sym = np.clip(init_ctx + rng.integers(-3, 4, (rows, m)), 0, k - 1)
    counts = np.stack([np.bincount(r, minlength=k) for r in sym]).astype(np.int64)
    weights = buckets.fit_weights(sym, init_ctx, 8)
    for lanes in (1, 4, 6):
        ref = ref_encode_ctx(sym, init_ctx, counts, weights, lanes)
        _same_code(fast.encode_ctx(sym, init_ctx, counts, weights, lanes), ref)
        assert np.array_equal(fast_decode_ctx(fast, *ref, init_ctx, counts, weights), sym)


# ---------------------------------------------------------------- dispatch and edges


@pytest.mark.parametrize(("rows", "m"), [(0, 5), (3, 0), (0, 0)])
@each_backend
def test_empty_tensors_go_to_the_reference(fast, rows, m):
    cls = np.zeros((rows, m), dtype=np.int64)
    counts = np.full((rows, 2), m // 2 if m else 0, dtype=np.int64)
    assert fast.encode(cls, counts, 1) is None
    states, words = rans.encode(cls, counts, 1)
    assert states.tolist() == [rans.STATE_LOW] and words.size == 0
    assert rans.decode(states, words, counts, m).shape == (rows, m)
    with pytest.raises(IntegrityError, match="an empty tensor has coded data"):
        rans.decode(states, np.ones(1, dtype=np.uint32), counts, m)
    ctx = np.zeros((rows, m), dtype=np.int64)
    weights = np.ones(3, dtype=np.int64)
    assert fast.encode_ctx(cls, ctx, counts, weights, 1) is None
    assert rans.encode_ctx(cls, ctx, counts, weights, 1)[1].size == 0
    with pytest.raises(IntegrityError, match="an empty tensor has coded data"):
        rans.decode_ctx(states + np.uint64(1), words, ctx, counts, weights)


@each_backend
def test_inputs_outside_the_kernels_domain_fall_back_to_the_reference(fast):
    rng = np.random.default_rng(0)
    cls = np.stack([rng.permutation(8) for _ in range(3)])
    counts = np.ones((3, 8), dtype=np.int64)
    wrong = counts.copy()
    wrong[:, 0] = 2  # counts that are not those of the rows
    assert fast.encode(cls, wrong, 2) is None
    assert rans.encode(cls, wrong, 2)[1].tobytes() == ref_encode(cls, wrong, 2)[1].tobytes()
    assert fast.encode(cls, counts.astype(np.float64), 2) is None
    states, words = rans.encode(cls, counts, 2)
    bad = states.copy()
    bad[1] = 5
    assert fast_decode(fast, bad, words, counts, 8) is None
    with pytest.raises(IntegrityError, match="coder state out of range"):
        rans.decode(bad, words, counts, 8, "w")


@each_backend
def test_read_only_inputs_take_the_fast_path(fast):
    rng = np.random.default_rng(1)
    cls = np.stack([rng.permutation(50) for _ in range(4)])
    counts = np.ones((4, 50), dtype=np.int64)
    states, words = rans.encode(cls, counts, 2)
    payload = states.astype("<u8").tobytes() + words.astype("<u4").tobytes()
    st_ro = np.frombuffer(payload, dtype="<u8", count=2)
    wd_ro = np.frombuffer(payload, dtype="<u4", offset=16)
    out = fast_decode(fast, st_ro, wd_ro, counts, 50)
    assert out is not None and np.array_equal(out, cls)


def test_pure_numpy_environment_variable(monkeypatch):
    fastest = kernels.load("rans")
    assert fastest is not None
    monkeypatch.setenv(kernels.PURE_NUMPY_ENV, "1")
    assert kernels.load("rans") is None and kernels.load("rans_c") is None
    cls = np.array([[1, 0, 2]], dtype=np.int64)
    counts = np.ones((1, 3), dtype=np.int64)
    states, words = rans.encode(cls, counts, 1)
    assert np.array_equal(rans.decode(states, words, counts, 3), cls)
    monkeypatch.setenv(kernels.PURE_NUMPY_ENV, "0")
    assert kernels.load("rans") is fastest


@each_backend
def test_the_environment_chooses_the_backend(fast, monkeypatch):
    monkeypatch.setenv(kernels.BACKENDS_ENV, fast.backend)
    assert kernels.load("rans").impl is fast.impl
    monkeypatch.setenv(kernels.BACKENDS_ENV, "none-of-these")
    monkeypatch.setattr(kernels, "_warned", set())
    with pytest.warns(kernels.KernelWarning, match="unknown backend"):
        assert kernels.load("rans") is None


def test_the_c_kernels_serve_where_built():
    built = importlib.util.find_spec("permcodec.kernels.rans_c") is not None
    fast = kernels.load("rans")
    assert (fast.backend if fast is not None else None) == ("c" if built else None)


@each_backend
def test_lanes_beyond_rows_and_errors_match(fast):
    rng = np.random.default_rng(2)
    cls = np.stack([rng.permutation(30) for _ in range(3)])
    counts = np.ones((3, 30), dtype=np.int64)
    ref = ref_encode(cls, counts, 5)  # two padding lanes
    _same_code(fast.encode(cls, counts, 5), ref)
    states, words = ref
    for cut in range(words.size):
        _same_outcome(
            lambda *a: fast_decode(fast, *a), ref_decode, states, words[:cut], counts, 30, "w"
        )


@each_backend
def test_a_bad_frequency_is_reported_before_a_missing_word(fast):
    """Counts that do not fit the stream (lane 1 runs out of classes at once) with a
    truncated stream: in a step where lane 0 lacks a word and lane 1 has frequency 0,
    the reference says "inconsistent", so the kernels must finish the step first."""
    m, n = 40, 4
    for seed in range(40):
        rng = np.random.default_rng(seed)
        cls = rng.integers(0, n, (2, m))
        counts = np.stack([np.bincount(r, minlength=n) for r in cls]).astype(np.int64)
        states, words = ref_encode(cls, counts, 2)
        bad = counts.copy()
        bad[1] = [1, 0, 0, 0]
        ctx = rng.integers(0, n, (2, m))
        weights = rng.integers(1, 9, 2 * n - 1)
        ctx_states, ctx_words = ref_encode_ctx(cls, ctx, counts, weights, 2)
        for cut in range(words.size):
            _same_outcome(lambda *a: fast_decode(fast, *a), ref_decode, states, words[:cut], bad, m)
        for cut in range(ctx_words.size):
            cut_words = ctx_words[:cut]
            _same_outcome(
                lambda *a: fast_decode_ctx(fast, *a),
                ref_decode_ctx,
                ctx_states,
                cut_words,
                ctx,
                bad,
                weights,
            )


NO_NUMBA = r"""
import importlib.abc, sys

BLOCKED = sys.argv[1].split(",")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] == "numba":
            raise ImportError("numba is blocked in this test")
        if fullname in BLOCKED:  # as if the extension were not built
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None

sys.meta_path.insert(0, Block())
import numpy as np
from permcodec import kernels
from permcodec.coding import rans

import warnings

cls = np.array([[2, 0, 1, 0], [0, 1, 0, 2]])
counts = np.array([[2, 1, 1], [2, 1, 1]])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    states, words = rans.encode(cls, counts, 2)
    assert np.array_equal(rans.decode(states, words, counts, 4), cls)
fast = kernels.load("rans")
print(None if fast is None else fast.backend, [str(w.message) for w in caught])
print(states.tolist(), words.tolist())
"""


def _without(blocked: str) -> tuple[str, list[str], str]:
    """Encode and decode in a fresh interpreter where numba cannot be imported and
    the modules in ``blocked`` are missing: (backend, warnings, code)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (kernels.PURE_NUMPY_ENV, kernels.BACKENDS_ENV)
    }
    run = subprocess.run(
        [sys.executable, "-c", NO_NUMBA, blocked],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    first, code = run.stdout.strip().splitlines()
    backend, caught = first.split(" ", 1)
    return backend, eval(caught), code


def _expected_code() -> str:
    cls = np.array([[2, 0, 1, 0], [0, 1, 0, 2]])
    counts = np.array([[2, 1, 1], [2, 1, 1]])
    states, words = rans.encode(cls, counts, 2)
    return f"{states.tolist()} {words.tolist()}"


def test_coder_falls_back_to_the_reference_without_c_kernels():
    backend, caught, code = _without("permcodec.kernels.rans_c,permcodec.kernels.philox_c")
    # an install without a C compiler is a supported one: the reference, and no warning
    assert (backend, caught) == ("None", []) and code == _expected_code()


def test_c_kernels_need_no_numba():
    pytest.importorskip("permcodec.kernels.rans_c")
    backend, caught, code = _without("")
    assert (backend, caught, code) == ("c", [], _expected_code())


# ---------------------------------------------------------------- row-rans per backend


def _rows_with_repeats(rng: np.random.Generator, rows: int, m: int, repeats: list[bool]):
    cls = np.stack(
        [rng.integers(0, max(1, m - 2), m) if rep else rng.permutation(m) for rep in repeats]
    )
    counts = np.stack([np.bincount(r, minlength=m) for r in cls]).astype(np.int64)
    return cls, counts


@each_backend
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_row_coder_matches_reference(fast, data):
    rows = data.draw(st.integers(1, 10), label="rows")
    m = data.draw(st.integers(1, 70), label="m")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    repeats = data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    cls, counts = _rows_with_repeats(rng, rows, m, repeats)
    lanes = data.draw(st.integers(1, rows), label="lanes")
    ref = REF["encode_rows"](cls, counts, lanes)
    got = fast.encode_rows(cls, counts, lanes)
    assert got is not None
    for g, want in zip(got, ref, strict=True):
        assert g.dtype == want.dtype and g.tobytes() == want.tobytes()
    states, lengths, words = ref
    if words.size and data.draw(st.booleans(), label="damage"):
        words = words.copy()
        words[data.draw(st.integers(0, words.size - 1))] ^= np.uint32(1 << 7)
    _same_outcome(
        public(fast, rans.decode_rows),
        lambda *a: REF["decode_rows_window"](*a)[0],
        states,
        lengths,
        words,
        counts,
        m,
        "t",
    )


@each_backend
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_lanes_decoded_four_at_a_time_match_reference(fast, data):
    """The C decoder steps four lanes together and falls back to one lane at a time
    where a lane is done or runs out of words: many lanes of uneven rows, mixed rows,
    and segments shortened or lengthened (an early end or a surplus in one lane)."""
    rows = data.draw(st.integers(4, 40), label="rows")
    m = data.draw(st.integers(1, 40), label="m")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    repeats = data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    cls, counts = _rows_with_repeats(rng, rows, m, repeats)
    lanes = data.draw(st.integers(4, min(rows, 13)), label="lanes")
    states, lengths, words = REF["encode_rows"](cls, counts, lanes)
    lengths, words = lengths.astype(np.int64), words.copy()
    lane = data.draw(st.integers(0, lanes - 1), label="damaged lane")
    end = int(lengths[: lane + 1].sum())
    kind = data.draw(st.sampled_from(["none", "shorten", "lengthen"]), label="damage")
    if kind == "shorten" and lengths[lane]:
        cut = data.draw(st.integers(1, int(lengths[lane])), label="cut")
        words = np.delete(words, np.arange(end - cut, end))
        lengths[lane] -= cut
    elif kind == "lengthen":
        words = np.insert(words, end, np.uint32(0x9E3779B9))
        lengths[lane] += 1
    _same_outcome(
        public(fast, rans.decode_rows),
        lambda *a: REF["decode_rows_window"](*a)[0],
        states,
        lengths.astype(np.uint32),
        words,
        counts,
        m,
        "t",
    )


@pytest.mark.slow
@pytest.mark.parametrize("m", [65535, 65536])
def test_rows_at_the_edge_of_the_division_table_match_the_reference(m):
    """Totals up to 65535 divide by a multiplication in the C kernels, larger ones by a
    division: rows of m distinct values (and with repeats) either side of the edge code
    to the reference encoder's bytes (about 10 s of numpy here) and decode back."""
    c = pytest.importorskip("permcodec.kernels.rans_c")
    fast = RansKernels(c)
    rng = np.random.default_rng(m)
    cls, counts = _rows_with_repeats(rng, 2, m, [False, True])
    coded = REF["encode_rows"](cls, counts, 2)
    got = fast.encode_rows(cls, counts, 2)
    assert all(g.tobytes() == w.tobytes() for g, w in zip(got, coded, strict=True))
    assert np.array_equal(fast.decode_rows_window(*coded, counts, m)[0], cls)
    mixed = fast.encode(cls, counts, 2)
    assert np.array_equal(fast_decode(fast, *mixed, counts, m), cls)


# ---------------------------------------------------------------- inputs beyond the domain


@each_backend
def test_weighted_totals_beyond_31_bits_go_to_the_reference(fast):
    """Counts whose weighted total passes 2**31 would wrap the C kernel's scaled state:
    the public decoder hands them to the reference, with the reference's outcome."""
    rng = np.random.default_rng(4)
    k, m = 4, 30
    sym = rng.integers(0, k, (2, m))
    ctx = rng.integers(0, k, (2, m))
    counts = np.stack([np.bincount(r, minlength=k) for r in sym]).astype(np.int64)
    weights = rng.integers(1, 9, 2 * k - 1)
    states, words = ref_encode_ctx(sym, ctx, counts, weights, 2)
    huge = counts * (2**30)
    assert fast.decode_ctx_window(states, words, ctx, huge, weights) is None
    _same_outcome(
        public(fast, rans.decode_ctx), ref_decode_ctx, states, words, ctx, huge, weights, "t"
    )


@each_backend
def test_negative_counts_and_segment_lengths_go_to_the_reference(fast):
    rng = np.random.default_rng(5)
    cls, counts = _rows_with_repeats(rng, 3, 20, [True, False, True])
    states, words = ref_encode(cls, counts, 2)
    bad = counts.copy()
    bad[0, 0] = -3
    assert fast.decode_window(states, words, bad, 20) is None
    _same_outcome(public(fast, rans.decode), ref_decode, states, words, bad, 20, "t")
    states, lengths, words = REF["encode_rows"](cls, counts, 2)
    shifted = lengths.astype(np.int64) + np.array([-(2**40), 2**40])
    assert fast.decode_rows_window(states, shifted, words, counts, 20) is None


# ---------------------------------------------------------------- dispatch


def test_an_unknown_backend_name_warns_once(monkeypatch):
    monkeypatch.setenv(kernels.BACKENDS_ENV, "cython")
    monkeypatch.setattr(kernels, "_warned", set())
    with pytest.warns(kernels.KernelWarning, match="unknown backend.*cython") as caught:
        assert kernels.load("rans") is None
        assert kernels.load("rans") is None
    assert len([w for w in caught if "unknown backend" in str(w.message)]) == 1


def test_a_stale_extension_is_refused_with_a_warning(monkeypatch):
    pytest.importorskip("permcodec.kernels.rans_c")
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setattr(kernels, "_hosts", {})
    monkeypatch.setattr(kernels, "_warned", set())
    monkeypatch.setattr(kernels, "EXTENSION_API", kernels.EXTENSION_API + 1)
    with pytest.warns(kernels.KernelWarning, match="rans_c.*rebuild it"):
        fallback = kernels.load("rans")
    assert fallback is None
