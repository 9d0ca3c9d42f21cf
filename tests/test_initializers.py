"""Initializer specs: numpy/torch agreement, statistics, sparsity, errors, dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import permcodec
from permcodec import InitSpec, PlanError
from permcodec.core import dtypes, philox
from permcodec.core.initializers import generate, kept_count, resolve
from permcodec.core.initializers import initial_rows as init_rows
from permcodec.core.plan import Plan
from permcodec.torch import TorchOps, generate_torch

TORCH_CPU = TorchOps("cpu")
KEY = philox.stream_key(2024, "layer.weight")
SHAPES = [(6, 20), (4, 3, 3, 3), (17,), (1, 1), (3, 5, 7)]


def _gen(spec: InitSpec, shape: tuple[int, ...], key=KEY, xp=None):
    r = resolve(spec, shape)
    return generate(r, key, shape) if xp is None else generate(r, key, shape, xp)


# ---------------------------------------------------------------- numpy == torch


@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("density", [1.0, 0.3])
def test_numpy_and_torch_generate_bit_identical(spec_case, spec_of, density, granularity):
    spec = spec_of(spec_case, density=density, granularity=granularity)
    for shape in SHAPES:
        a = _gen(spec, shape)
        b = _gen(spec, shape, xp=TORCH_CPU)
        assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
        assert a.dtype == np.float32 and b.dtype == torch.float32
        assert a.shape == tuple(b.shape)
        assert np.array_equal(a.view(np.uint32), b.numpy().view(np.uint32)), shape


@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("density", [1.0, 0.3])
def test_generate_shape_and_determinism(spec_case, spec_of, density, granularity):
    spec = spec_of(spec_case, density=density, granularity=granularity)
    shape = (5, 4, 2)
    a = _gen(spec, shape)
    expect = (1, 40) if granularity == "tensor" else (5, 8)
    assert a.shape == expect
    assert np.array_equal(a.view(np.uint32), _gen(spec, shape).view(np.uint32))
    # another stream gives other values (except for deterministic constants)
    other = _gen(spec, shape, key=philox.stream_key(2025, "layer.weight"))
    if spec.kind == "constant" and not spec.params["random_sign"] and density == 1.0:
        assert np.array_equal(a, other)
    else:
        assert not np.array_equal(a, other)


# ---------------------------------------------------------------- statistics


def _fans(shape):
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


STAT_SHAPE = (64, 32, 3, 3)  # fan_in 288, fan_out 576, 18432 values


@pytest.mark.parametrize(
    ("kind", "bound_fn"),
    [
        ("he_uniform", lambda fi, fo: math.sqrt(6.0 / fi)),
        ("glorot_uniform", lambda fi, fo: math.sqrt(6.0 / (fi + fo))),
        ("torch_default", lambda fi, fo: 1.0 / math.sqrt(fi)),
    ],
)
def test_uniform_family_bounds(kind, bound_fn):
    v = _gen(InitSpec(kind), STAT_SHAPE).astype(np.float64)
    bound = bound_fn(*_fans(STAT_SHAPE))
    assert np.abs(v).max() <= bound * (1 + 1e-6)
    assert np.abs(v).max() >= 0.99 * bound  # fills the interval
    assert abs(v.mean()) < 0.03 * bound
    assert v.std() == pytest.approx(bound / math.sqrt(3.0), rel=0.03)


def test_uniform_bounds_and_mean():
    v = _gen(InitSpec("uniform", a=-0.25, b=0.75), STAT_SHAPE).astype(np.float64)
    assert v.min() >= -0.25 and v.max() <= 0.75
    assert v.min() < -0.24 and v.max() > 0.74
    assert v.mean() == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize(
    ("spec", "mean", "std_fn"),
    [
        (InitSpec("normal", mean=0.1, std=0.02), 0.1, lambda fi, fo: 0.02),
        (InitSpec("normal"), 0.0, lambda fi, fo: 1.0),
        (InitSpec("he_normal"), 0.0, lambda fi, fo: math.sqrt(2.0 / fi)),
        (InitSpec("kaiming_normal", mode="fan_out"), 0.0, lambda fi, fo: math.sqrt(2.0 / fo)),
        (InitSpec("glorot_normal"), 0.0, lambda fi, fo: math.sqrt(2.0 / (fi + fo))),
    ],
    ids=["normal", "std_normal", "he_normal", "he_normal_fan_out", "glorot_normal"],
)
def test_normal_family_moments(spec, mean, std_fn):
    v = _gen(spec, STAT_SHAPE).astype(np.float64)
    std = std_fn(*_fans(STAT_SHAPE))
    assert v.std() == pytest.approx(std, rel=0.05)
    assert abs(v.mean() - mean) < 0.05 * std
    # roughly Gaussian: ~68% within one std
    assert np.mean(np.abs(v - mean) < std) == pytest.approx(0.6827, abs=0.02)


def test_trunc_normal_within_bounds_and_moments():
    spec = InitSpec("trunc_normal", mean=0.05, std=0.5, a=-0.6, b=0.9)
    v = _gen(spec, STAT_SHAPE).astype(np.float64)
    assert v.min() >= -0.6 and v.max() <= 0.9
    assert v.min() < -0.59 and v.max() > 0.89
    # moments of N(0.05, 0.5) truncated to [-0.6, 0.9]
    from statistics import NormalDist

    nd = NormalDist()
    al, be = (-0.6 - 0.05) / 0.5, (0.9 - 0.05) / 0.5
    z = nd.cdf(be) - nd.cdf(al)
    pa, pb = nd.pdf(al), nd.pdf(be)
    mean = 0.05 + 0.5 * (pa - pb) / z
    var = 0.25 * (1 + (al * pa - be * pb) / z - ((pa - pb) / z) ** 2)
    assert v.mean() == pytest.approx(mean, abs=0.01)
    assert v.std() == pytest.approx(math.sqrt(var), rel=0.03)
    # default bounds are [-2, 2]
    w = _gen(InitSpec("trunc_normal"), STAT_SHAPE)
    assert w.min() >= -2.0 and w.max() <= 2.0


def test_constant_values_exact():
    v = _gen(InitSpec("constant", value=0.08), (8, 50))
    assert (v == np.float32(0.08)).all()
    s = _gen(InitSpec("constant", value=0.08, random_sign=True), (8, 50))
    assert set(np.unique(s).tolist()) == {float(np.float32(-0.08)), float(np.float32(0.08))}
    assert 0.35 < np.mean(s > 0) < 0.65
    # weight_agnostic is the constant scheme
    assert (_gen(InitSpec("weight_agnostic", value=-1.5), (3, 4)) == -1.5).all()


def test_two_value_only_low_high():
    v = _gen(InitSpec("two_value", low=-0.5, high=1.5, p=0.25), STAT_SHAPE)
    assert set(np.unique(v).tolist()) == {-0.5, 1.5}
    assert np.mean(v == 1.5) == pytest.approx(0.25, abs=0.02)
    b = _gen(InitSpec("binary"), STAT_SHAPE)
    assert set(np.unique(b).tolist()) == {-1.0, 1.0}
    assert np.mean(b == 1.0) == pytest.approx(0.5, abs=0.02)


# ---------------------------------------------------------------- sparsity


@pytest.mark.parametrize("density", [0.3, 0.0, 0.5, 0.999, 1.0])
def test_sparse_rows_keep_exact_counts(spec_case, spec_of, density):
    for shape in [(7, 13), (5, 2, 3, 3), (11,)]:
        v = _gen(spec_of(spec_case, density=density), shape)
        m = v.shape[1]
        k = math.floor(density * m + 0.5)
        assert kept_count(density, m) == k
        assert ((v != 0).sum(axis=1) == k).all(), shape


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_sparse_dropped_values_are_positive_zero(granularity):
    """generate(): "the rest are +0.0" -- also where the dropped value was negative
    (a -0.0 would make the zeros two classes and inflate the bound)."""
    for xp in (None, TORCH_CPU):
        v = _gen(InitSpec("he_uniform", density=0.3, granularity=granularity), (8, 50), xp=xp)
        v = np.asarray(v)
        zeros = v[v == 0]
        assert zeros.size == 8 * 50 - 8 * 15
        assert not np.signbit(zeros).any()


@pytest.mark.parametrize("density", [0.3, 0.77])
def test_sparse_tensor_granularity_counts_per_tensor(spec_case, spec_of, density):
    shape = (9, 4, 3)
    v = _gen(spec_of(spec_case, density=density, granularity="tensor"), shape)
    assert v.shape == (1, 108)
    assert int((v != 0).sum()) == math.floor(density * 108 + 0.5)
    rows = v.reshape(9, 12)
    # per-tensor masks do not keep a fixed count in every row
    counts = (rows != 0).sum(axis=1)
    assert counts.min() != counts.max()


def test_sparse_keeps_dense_values_at_kept_positions():
    """The mask only zeroes values: kept positions hold the dense values."""
    dense = _gen(InitSpec("he_uniform"), (6, 40))
    sparse = _gen(InitSpec("he_uniform", density=0.3), (6, 40))
    kept = sparse != 0
    assert np.array_equal(sparse[kept], dense[kept])
    # and different densities keep nested sets (smallest mask words first)
    sparser = _gen(InitSpec("he_uniform", density=0.1), (6, 40))
    assert (kept | (sparser == 0)).all()


# ---------------------------------------------------------------- golden


def test_golden_he_uniform_values():
    """Format stability: first values of he_uniform (4, 8), seed 0, tensor "w"."""
    tp = Plan(0).add("w", "he_uniform", (4, 8))
    v = init_rows(tp.spec, tp.key, (4, 8), "float32").reshape(-1)
    assert [hex(int(x)) for x in v[:5].view(np.uint32)] == [
        "0xbf54b0a4",
        "0xbe35004f",
        "0x3f266597",
        "0xbf2c45cb",
        "0xbf514f34",
    ]


# ---------------------------------------------------------------- spec errors


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("lecun_magic",), {}, "unknown initializer"),
        (("he_uniform",), {"std": 1.0}, "no parameter"),
        (("normal",), {"value": 1.0}, "no parameter"),
        (("binary",), {"bogus": 1}, "no parameter"),
        (("uniform",), {"a": -1.0}, "needs parameter"),
        (("uniform",), {}, "needs parameter"),
        (("constant",), {}, "needs parameter"),
        (("weight_agnostic",), {}, "needs parameter"),
        (("he_uniform",), {"density": 1.5}, "density"),
        (("he_uniform",), {"density": -0.1}, "density"),
        (("he_uniform",), {"density": float("nan")}, "density"),
        (("he_uniform",), {"granularity": "column"}, "granularity"),
        (("he_uniform",), {"granularity": "ROW"}, "granularity"),
    ],
)
def test_init_spec_errors(args, kwargs, match):
    with pytest.raises(PlanError, match=match) as exc:
        InitSpec(*args, **kwargs)
    assert isinstance(exc.value, ValueError)
    assert isinstance(exc.value, permcodec.PermcodecError)


def test_init_spec_aliases_resolve():
    s = InitSpec("he_uniform")
    assert s.kind == "kaiming_uniform" and s.params["gain"] == pytest.approx(math.sqrt(2))
    t = InitSpec("torch_default")
    assert t.kind == "kaiming_uniform" and t.params["gain"] == pytest.approx(math.sqrt(1 / 3))
    b = InitSpec("binary", p=0.2)
    assert b.kind == "two_value" and b.params == {"low": -1.0, "high": 1.0, "p": 0.2}
    r = resolve(InitSpec("glorot_normal", density=0.5, granularity="tensor"), (3, 4, 5))
    assert r["fan_in"] == 20 and r["fan_out"] == 15
    assert r["density"] == 0.5 and r["granularity"] == "tensor"
    # a resolved spec dict turns back into the same spec
    assert resolve(r, (3, 4, 5)) == r


# ---------------------------------------------------------------- dtypes


def _torch_bits(t: torch.Tensor) -> np.ndarray:
    t = t.contiguous()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16).numpy().view(np.uint16)
    if t.dtype == torch.float32:
        return t.numpy().view(np.uint32)
    return t.numpy().view(np.uint64)


F32_EDGE = [
    0.0,
    -0.0,
    1e-45,
    -1e-45,
    1.1754944e-38,
    3.4028235e38,
    -3.4028235e38,
    65504.0,
    65519.99,
    65520.0,
    6e-8,
    2.98e-8,
    5.96e-8,
    -2.98e-8,
    1.0 + 2.0**-8,
    1.0 + 2.0**-11,
    1.0 + 3 * 2.0**-11,
    3.3895314e38,
]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.floats(width=32, allow_nan=False, allow_infinity=False)
        | st.sampled_from(F32_EDGE)
        | st.integers(0, 2**32 - 1).map(
            lambda b: float(np.array([b], np.uint32).view(np.float32)[0])
        ),
        min_size=1,
        max_size=64,
    )
)
def test_from_float32_matches_torch_casts(values):
    x = np.array(values, dtype=np.float32)
    x = x[np.isfinite(x)]
    t = torch.from_numpy(x.copy())
    for name, tdt, view in [
        ("float16", torch.float16, np.uint16),
        ("bfloat16", torch.bfloat16, np.uint16),
        ("float64", torch.float64, np.uint64),
    ]:
        got = dtypes.from_float32(x, name)
        assert got.dtype == dtypes.STORAGE[name]
        assert np.array_equal(got.view(view), _torch_bits(t.to(tdt))), name
    assert dtypes.from_float32(x, "float32").view(np.uint32).tolist() == x.view(np.uint32).tolist()


def test_from_float32_rejects_integer_dtypes():
    with pytest.raises(permcodec.FormatError):
        dtypes.from_float32(np.zeros(3, np.float32), "int8")


def _as_float(bits_or_values: np.ndarray, name: str) -> np.ndarray:
    if name == "bfloat16":
        return (bits_or_values.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return bits_or_values.astype(np.float64)


@pytest.mark.parametrize("name", dtypes.FLOAT_DTYPES)
@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(width=32, allow_nan=False), min_size=2, max_size=50))
def test_order_keys_follow_float_order(name, values):
    with np.errstate(over="ignore"):
        x = dtypes.from_float32(np.array([*values, 0.0, -0.0], dtype=np.float32), name)
    keys = dtypes.order_keys(x, name)
    f = _as_float(x, name)
    assert keys.dtype == np.int64
    neg_zero = (f == 0) & np.signbit(f)
    for i in range(len(x)):
        for j in range(len(x)):
            fi, fj = f[i], f[j]
            if fi == fj and neg_zero[i] != neg_zero[j]:
                assert (keys[i] < keys[j]) == bool(neg_zero[i])  # -0.0 before +0.0
            elif fi != fj:
                assert (keys[i] < keys[j]) == (fi < fj)
            # equal keys iff bit-identical
            assert (keys[i] == keys[j]) == (x[i : i + 1].tobytes() == x[j : j + 1].tobytes())


@pytest.mark.parametrize("name", dtypes.FLOAT_DTYPES)
def test_order_keys_sorts_like_floats(name):
    rng = np.random.default_rng(3)
    vals = np.concatenate(
        [rng.standard_normal(500) * 10.0 ** rng.integers(-40, 38, 500), [0.0, -0.0, 1e-45]]
    ).astype(np.float32)
    with np.errstate(over="ignore"):
        x = dtypes.from_float32(vals, name)
    keys = dtypes.order_keys(x, name)
    f = _as_float(x, name)
    s = f[np.argsort(keys, kind="stable")]
    assert (s[1:] >= s[:-1]).all()
    zeros = s == 0
    # among the zeros, every -0.0 comes first
    sb = np.signbit(s[zeros])
    assert (np.diff(sb.astype(int)) <= 0).all()


# ---------------------------------------------------------------- torch casts of init


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_generate_torch_matches_init_rows_for_every_spec(spec_case, spec_of, dtype):
    tdt = getattr(torch, dtype)
    for density in (1.0, 0.3):
        shape = (5, 2, 3, 3)
        tp = Plan(9).add("conv.weight", spec_of(spec_case, density=density), shape)
        a = init_rows(tp.spec, tp.key, shape, dtype).reshape(shape)
        t = generate_torch(tp, shape, tdt)
        assert t.dtype == tdt and tuple(t.shape) == shape
        assert _torch_bits(t).tobytes() == a.tobytes()


def test_normal_init_torch_equals_numpy_for_any_std(find_adversarial_std):
    """The promise: same spec, key and shape give the same float32 values on numpy and
    torch. A 1-ulp sqrt difference in ndtri's tail flips a float32 value for a std that
    puts it on a rounding boundary (found from this build's own torch/numpy difference)."""
    shape = (64, 256)
    key = philox.stream_key(0, "weight")
    std = find_adversarial_std(key, 64 * 256)
    tp = Plan(0).add("weight", InitSpec("normal", std=std), shape)
    assert tp.key == key
    a = init_rows(tp.spec, tp.key, shape, "float32").reshape(shape)
    t = generate_torch(tp, shape, torch.float32)
    assert np.array_equal(_torch_bits(t), a.view(np.uint32))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 70),
    st.sampled_from(["int64", "int32", "uint32", "uint8", "uint64"]),
    st.integers(0, 2**32),
    st.one_of(st.integers(-(2**40), 2**40), st.integers(-(2**63), 2**63 - 1)),
    st.integers(0, 2**31),
)
def test_numpy_stable_argsort_of_rows_is_numpys(rows, m, dtype, span, offset, seed):
    """The packed sort behind mask ranks and row classes orders rows exactly as numpy's
    stable argsort, ties (by index) and spans up to and past 2**32 included."""
    from permcodec.core.ops import NUMPY

    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    lo = max(int(info.min), min(int(info.max), offset))
    hi = min(int(info.max), lo + span)
    x = rng.integers(lo, hi, (rows, m), endpoint=True, dtype=dtype)
    x[:, ::3] = x[:, :1]  # ties
    assert np.array_equal(NUMPY.argsort_stable(x, axis=1), np.argsort(x, axis=1, kind="stable"))


def test_the_format_appendix_levels_example_is_what_the_generator_makes():
    """FORMAT.md B.5, read from the document: magnitudes, ranks and the tensor's bits."""
    import re
    from pathlib import Path

    from permcodec.core.initializers import generate, level_values, resolve

    text = (Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text()
    b5 = text[text.index("### B.5") :]
    key = (0x1E043FC3, 0x47EB32AF)
    spec = resolve(InitSpec("levels", levels=2.0, scale=0.5, density=0.75), (2, 8))
    values = level_values(2, 0.5)
    assert f"`a_0 = ndtri(0.625) × 0.5 = {values[2].hex()}`" in b5
    assert f"`a_1 = ndtri(0.875) × 0.5 = {values[3].hex()}`" in b5
    words = philox.words(key, 1, 0, 16, np)
    found = re.findall(r"ranks\s+`([0-9 ]+)`", b5)
    assert len(found) == 2
    for r, ranks in enumerate(found):
        row = [int(w) for w in words[8 * r : 8 * r + 8]]
        order = sorted(range(8), key=lambda j: (row[j], j))
        assert [order.index(j) for j in range(8)] == [int(x) for x in ranks.split()]
    tensor = re.search(r"C order:\s+`([0-9a-f ]+)`\s+`([0-9a-f ]+)`", b5)
    bits = generate(spec, key, (2, 8)).astype(np.float32).view(np.uint32).ravel()
    assert " ".join(f"{b:08x}" for b in bits) == f"{tensor[1]} {tensor[2]}"
