"""The Philox4x32-10 generator, stream keys, and the platform-independent math."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from permcodec.core import detmath, philox
from permcodec.torch import TorchOps

TORCH_CPU = TorchOps("cpu")

# Random123 known-answer vectors for Philox4x32-10: (counter, key, output).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
KAT_IDS = ["zeros", "ones", "pi"]


# ---------------------------------------------------------------- Philox core


@pytest.mark.parametrize(("ctr", "key", "expected"), KAT, ids=KAT_IDS)
def test_philox_known_answers_numpy(ctr, key, expected):
    c = [np.array([x], dtype=np.int64) for x in ctr]
    out = philox.philox4x32(*c, *key)
    assert len(out) == 4
    assert all(isinstance(o, np.ndarray) and o.dtype == np.int64 for o in out)
    assert tuple(int(o[0]) for o in out) == expected


@pytest.mark.parametrize(("ctr", "key", "expected"), KAT, ids=KAT_IDS)
def test_philox_known_answers_torch(ctr, key, expected):
    c = [torch.tensor([x], dtype=torch.int64) for x in ctr]
    out = philox.philox4x32(*c, *key)
    assert all(isinstance(o, torch.Tensor) and o.dtype == torch.int64 for o in out)
    assert tuple(int(o[0]) for o in out) == expected


def test_philox_vectorized_lanes_are_independent():
    """All three vectors at once, in one array per counter word, with a shared key."""
    key = (0xA4093822, 0x299F31D0)
    ctrs = np.array([k[0] for k in KAT] * 3, dtype=np.int64)  # 9 counters
    out = philox.philox4x32(*(ctrs[:, i] for i in range(4)), *key)
    one = philox.philox4x32(*(ctrs[2:3, i] for i in range(4)), *key)
    for lane in range(4):
        assert int(out[lane][2]) == KAT[2][2][lane]
        assert int(out[lane][5]) == int(one[lane][0])
        assert np.array_equal(out[lane][:3], out[lane][3:6])


def test_words_layout_matches_philox_blocks():
    """Word i of purpose p is lane i % 4 of the block at counter (i // 4, 0, p, 0)."""
    key = philox.stream_key(123, "layer.weight")
    for purpose in (philox.VALUES, philox.MASK, philox.SIGN):
        w = philox.words(key, purpose, 0, 12)
        blocks = np.arange(3, dtype=np.int64)
        zero = blocks * 0
        ref = philox.philox4x32(blocks, zero, zero + purpose, zero, *key)
        assert np.array_equal(w, np.stack(ref, axis=1).reshape(-1))
        assert w.dtype == np.int64
        assert ((w >= 0) & (w < 2**32)).all()
    # the purposes are different streams
    assert not np.array_equal(philox.words(key, 0, 0, 8), philox.words(key, 1, 0, 8))


FULL = 257


@settings(max_examples=150, deadline=None)
@given(start=st.integers(0, FULL), stop=st.integers(0, FULL), purpose=st.integers(0, 2))
def test_words_slices_agree_with_full_generation(start, stop, purpose):
    key = (0x12345678, 0x9ABCDEF0)
    full = philox.words(key, purpose, 0, FULL)
    part = philox.words(key, purpose, start, stop)
    expected = full[start:stop] if stop > start else full[:0]
    assert part.shape == expected.shape
    assert np.array_equal(part, expected)


@settings(max_examples=60, deadline=None)
@given(
    block=st.integers(0, 2**40),
    offset=st.integers(0, 3),
    length=st.integers(0, 40),
    purpose=st.integers(0, 2),
)
def test_words_high_counters_use_both_counter_words(block, offset, length, purpose):
    """Far into a stream the block index spills into counter word 1; slices stay exact."""
    key = (0xDEADBEEF, 0x01234567)
    start = 4 * block + offset
    got = philox.words(key, purpose, start, start + length)
    nblocks = (offset + length + 3) // 4
    b = np.arange(block, block + nblocks, dtype=np.int64)
    ref = philox.philox4x32(b & 0xFFFFFFFF, b >> 32, b * 0 + purpose, b * 0, *key)
    flat = np.stack(ref, axis=1).reshape(-1)[offset : offset + length]
    assert np.array_equal(got, flat)


@settings(max_examples=60, deadline=None)
@given(
    k0=st.integers(0, 2**32 - 1),
    k1=st.integers(0, 2**32 - 1),
    purpose=st.integers(0, 2),
    start=st.integers(0, 2**36),
    length=st.integers(0, 64),
)
def test_words_numpy_equals_torch(k0, k1, purpose, start, length):
    a = philox.words((k0, k1), purpose, start, start + length)
    b = philox.words((k0, k1), purpose, start, start + length, TORCH_CPU)
    assert isinstance(b, torch.Tensor)
    assert b.dtype == torch.int64
    assert np.array_equal(a, b.numpy())


# ---------------------------------------------------------------- stream keys


def test_stream_key_deterministic_and_distinct():
    k = philox.stream_key(42, "fc1.weight")
    assert k == philox.stream_key(42, "fc1.weight")
    assert all(isinstance(x, int) and 0 <= x < 2**32 for x in k)
    assert len(k) == 2
    names = ["fc1.weight", "fc2.weight", "fc1.bias", "", "fc1.weight ", "weight", "ünï"]
    keys = {philox.stream_key(42, n) for n in names}
    assert len(keys) == len(names)
    seeds = [0, 1, 2, 42, 2**32, 2**63, 2**64 - 1]
    keys = {philox.stream_key(s, "fc1.weight") for s in seeds}
    assert len(keys) == len(seeds)


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70, -(2**63)])
def test_stream_key_rejects_out_of_range_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        philox.stream_key(seed, "w")


def test_stream_key_accepts_range_ends():
    philox.stream_key(0, "w")
    philox.stream_key(2**64 - 1, "w")


def test_golden_stream_words():
    """Format stability: these words are what every existing .perm file was made from."""
    key = philox.stream_key(0, "weight")
    assert key == (1943658785, 2230690926)
    words = [int(w) for w in philox.words(key, philox.VALUES, 0, 4)]
    assert words == [0x7EE0CF85, 0xB27FFE0D, 0x57E265F5, 0x15704674]


# ---------------------------------------------------------------- detmath


def _ndtri_inputs() -> np.ndarray:
    rng = np.random.default_rng(1234)
    return np.concatenate(
        [
            rng.random(3000),
            10.0 ** -rng.uniform(0.0, 300.0, 1500),  # lower tail down to 1e-300
            1.0 - 10.0 ** -rng.uniform(1.0, 15.5, 500),  # upper tail
            [1e-300, 1e-200, 1e-100, 1e-20, 2.0**-33, 0.075, 0.5, 0.925, 0.999999],
            [0.5 - 0.425, 0.5 + 0.425, np.nextafter(0.075, 0), np.nextafter(0.925, 1)],
        ]
    )


def test_ndtri_matches_statistics_inv_cdf():
    u = _ndtri_inputs()
    assert ((u > 0) & (u < 1)).all()
    got = detmath.ndtri(u)
    nd = NormalDist()
    ref = np.array([nd.inv_cdf(float(x)) for x in u])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-14, atol=0)
    assert detmath.ndtri(np.array([0.5]))[0] == 0.0
    # symmetry, monotonicity
    v = np.linspace(1e-6, 1 - 1e-6, 2001)
    q = detmath.ndtri(v)
    assert (np.diff(q) > 0).all()


def test_log_torch_bit_identical_to_numpy():
    x = np.concatenate([_ndtri_inputs(), 10.0 ** np.linspace(-300, 300, 1001)])
    a = detmath.log(x)
    b = detmath.log(torch.from_numpy(x), TORCH_CPU).numpy()
    assert np.array_equal(a.view(np.uint64), b.view(np.uint64))


def _positive_normals() -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.concatenate(
        [
            10.0 ** rng.uniform(-307, 307, 5000),
            rng.uniform(0.0, 800.0, 20000),  # -log(p) for every p the initializers use
            [np.finfo(np.float64).tiny, np.finfo(np.float64).max, 1.0, 2.0, 0.25, 3.0],
        ]
    )


def test_sqrt_within_an_ulp_and_identical_on_torch():
    """sqrt feeds ndtri's tails; torch's own CPU sqrt is not correctly rounded, so the
    library computes it from + - * / only: the same bits on numpy and torch."""
    x = _positive_normals()
    a = detmath.sqrt(x)
    ref = np.sqrt(x)
    assert a.dtype == np.float64
    assert (np.abs(a - ref) <= np.spacing(ref)).all()
    b = detmath.sqrt(torch.from_numpy(x), TORCH_CPU).numpy()
    assert np.array_equal(a.view(np.uint64), b.view(np.uint64))
    squares = np.array([0.25, 1.0, 4.0, 9.0, 2.0**-600, 2.0**600], dtype=np.float64)
    assert np.array_equal(detmath.sqrt(squares), np.sqrt(squares))


def test_ndtri_torch_bit_identical_to_numpy():
    u = _ndtri_inputs()
    a = detmath.ndtri(u)
    b = detmath.ndtri(torch.from_numpy(u), TORCH_CPU).numpy()
    assert np.array_equal(a.view(np.uint64), b.view(np.uint64))
    # and on every uniform the generator can draw near the tails' boundaries
    w = np.arange(0, 2**32, 2**32 // 4099, dtype=np.int64)
    u2 = (w.astype(np.float64) + 0.5) * 2.0**-32
    a = detmath.ndtri(u2)
    b = detmath.ndtri(torch.from_numpy(u2), TORCH_CPU).numpy()
    assert np.array_equal(a.view(np.uint64), b.view(np.uint64))


def test_log_matches_math_log():
    """Over positive normal float64 values (the documented domain)."""
    rng = np.random.default_rng(99)
    x = np.concatenate(
        [
            10.0 ** rng.uniform(-300, 300, 5000),
            rng.uniform(0.5, 2.0, 3000),
            [1.0, 2.0, 0.5, 1 - 2**-53, 1 + 2**-52, math.sqrt(0.5), math.e, 2.0**-33],
            [np.finfo(np.float64).max, np.finfo(np.float64).tiny],
        ]
    )
    got = detmath.log(x)
    ref = np.array([math.log(float(v)) for v in x])
    np.testing.assert_allclose(got, ref, rtol=1e-15, atol=0)
    assert detmath.log(np.array([1.0]))[0] == 0.0


def test_ndtr_scalar_matches_normal_cdf():
    nd = NormalDist()
    xs = [float(x) for x in np.linspace(-9.0, 9.0, 3601)] + [0.0, -0.0, 1e-300, 8.0, -8.0, 7.999]
    for x in xs:
        got, ref = detmath.ndtr_scalar(x), nd.cdf(x)
        assert abs(got - ref) <= 4e-15, x
        if x >= -1.0:  # away from the lower tail's cancellation, relative accuracy
            assert abs(got - ref) <= 2e-14 * ref, x
    assert detmath.ndtr_scalar(0.0) == 0.5
    assert detmath.ndtr_scalar(8.5) == 1.0
    assert detmath.ndtr_scalar(-8.5) == 0.0


def test_exp_scalar_matches_math_exp():
    ys = [float(y) for y in np.linspace(-700.0, 700.0, 4001)]
    ys += [0.0, 1.0, -1.0, 1e-300, -1e-300, math.log(2.0), 0.5 * math.log(2.0), -32.0]
    for y in ys:
        got, ref = detmath.exp_scalar(y), math.exp(y)
        assert abs(got - ref) <= 1e-15 * ref, y
    assert detmath.exp_scalar(0.0) == 1.0


@settings(max_examples=50, deadline=None)
@given(
    key=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    purpose=st.integers(0, 2),
    start=st.integers(0, 2**50),
    count=st.integers(0, 300),
)
@pytest.mark.parametrize("backend", ["philox_c"])
def test_compiled_philox_matches_the_reference(backend, key, purpose, start, count):
    fast = pytest.importorskip(f"permcodec.kernels.{backend}")
    ref = philox.words(key, purpose, start, start + count, TorchOps("cpu"))
    got = fast.words(key, purpose, start, start + count)
    assert got.dtype == np.int64 and got.tolist() == ref.tolist()


@settings(max_examples=50, deadline=None)
@given(
    key=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    start=st.integers(0, 2**50),
    count=st.integers(0, 300),
    a=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    span=st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
)
@pytest.mark.parametrize("backend", ["philox_c"])
def test_compiled_uniform_values_match_the_reference(backend, key, start, count, a, span):
    """The compiled a + (b - a) u rounds each operation as numpy (and torch) do."""
    fast = pytest.importorskip(f"permcodec.kernels.{backend}")
    b = a + span
    ref = philox.uniform(key, philox.VALUES, start, start + count, a, b, TorchOps("cpu"))
    got = fast.uniform(key, philox.VALUES, start, start + count, a, b)
    assert got.dtype == np.float64
    assert got.view(np.int64).tolist() == ref.numpy().view(np.int64).tolist()
