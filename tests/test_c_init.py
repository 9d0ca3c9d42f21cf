"""The C seeded initializer (csrc/seeded_init.c, for the native decoder) against the numpy
reference: initial values, the math of FORMAT 7, row classes and spec checks, byte for
byte. The library is built with the system C compiler and loaded with ctypes."""

from __future__ import annotations

import ctypes
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from permcodec.coding.arrangement import init_classes
from permcodec.core import detmath
from permcodec.core.dtypes import FLOAT_DTYPES, STORAGE, order_keys
from permcodec.core.initializers import (
    KIND_SINCE,
    KINDS,
    check_resolved,
    fans,
    initial_rows,
    resolve,
    row_shape,
)
from permcodec.errors import PlanError

ROOT = Path(__file__).resolve().parents[1]
CFLAGS = ["-std=c99", "-O2", "-fwrapv", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror"]
CFLAGS += ["-shared", "-fPIC", f"-I{ROOT / 'csrc'}", "-DPC_SEEDED_INIT_PROBES"]

#: The kinds in the order of csrc/seeded_init.h's PC_KIND_* enum (FORMAT 3.5).
KIND_ORDER = [
    "uniform",
    "normal",
    "trunc_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "xavier_uniform",
    "xavier_normal",
    "constant",
    "two_value",
    "quantile",
    "levels",
]
#: perm_format.h's dtype enum.
DTYPE_CODE = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3}
PARAMS = ["a", "b", "mean", "std", "gain", "value", "low", "high", "p", "levels", "scale"]
OK, E_SPEC, E_ARGUMENT, E_RANGE = 0, 1, 2, 3
KEY = (503594947, 1206596271)  # FORMAT B.2: seed 0, tensor "w"
VERSION = 6


class Spec(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int),
        ("spec_version", ctypes.c_int64),
        *[(name, ctypes.c_double) for name in PARAMS],
        ("mode_fan_out", ctypes.c_int),
        ("random_sign", ctypes.c_int),
        ("knots", ctypes.POINTER(ctypes.c_double)),
        ("n_knots", ctypes.c_size_t),
        ("density", ctypes.c_double),
        ("tensor_granularity", ctypes.c_int),
        ("fan_in", ctypes.c_uint64),
        ("fan_out", ctypes.c_uint64),
    ]


CC = shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc)")


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    out = tmp_path_factory.mktemp("c_init") / "libseeded_init.so"
    cmd = [CC, *CFLAGS, str(ROOT / "csrc" / "seeded_init.c"), "-o", str(out), "-lm"]
    built = subprocess.run(cmd, capture_output=True, text=True)
    if built.returncode:
        pytest.fail(f"{' '.join(cmd)} failed:\n{built.stderr}")
    lib = ctypes.CDLL(str(out))
    u64, vp = ctypes.c_uint64, ctypes.c_void_p
    lib.pc_init_check.argtypes = [
        ctypes.POINTER(Spec),
        ctypes.POINTER(u64),
        ctypes.c_int,
        ctypes.c_uint32,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.pc_init_rows_shape.argtypes = [
        ctypes.POINTER(Spec),
        ctypes.POINTER(u64),
        ctypes.c_int,
        ctypes.POINTER(u64),
        ctypes.POINTER(u64),
    ]
    lib.pc_init_rows_shape.restype = None
    lib.pc_init_rows.argtypes = [ctypes.POINTER(Spec), ctypes.c_uint32, ctypes.c_uint32]
    lib.pc_init_rows.argtypes += [ctypes.c_int, u64, u64, u64, u64, vp]
    lib.pc_row_classes.argtypes = [ctypes.c_int, vp, u64, vp, vp, vp, ctypes.POINTER(u64)]
    lib.pc_probe_math.argtypes = [ctypes.c_int, ctypes.c_double]
    lib.pc_probe_math.restype = ctypes.c_double
    lib.pc_probe_ndtri_many.argtypes = [vp, ctypes.c_size_t, vp]
    lib.pc_probe_f16.argtypes = [ctypes.c_uint32]
    lib.pc_probe_f16.restype = ctypes.c_uint16
    return lib


def c_spec(spec: dict) -> tuple[Spec, object]:
    """The C struct of a resolved spec dict, and the knots array it points to."""
    s = Spec(kind=KIND_ORDER.index(spec["kind"]), spec_version=spec["version"])
    for name in PARAMS:
        if name in spec:
            setattr(s, name, float(spec[name]))
    s.mode_fan_out = spec.get("mode") == "fan_out"
    s.random_sign = bool(spec.get("random_sign", False))
    knots = None
    if "knots" in spec:
        knots = (ctypes.c_double * len(spec["knots"]))(*spec["knots"])
        s.knots, s.n_knots = knots, len(spec["knots"])
    s.density = spec["density"]
    s.tensor_granularity = spec["granularity"] == "tensor"
    s.fan_in, s.fan_out = spec["fan_in"], spec["fan_out"]
    return s, knots


def c_shape(shape: tuple[int, ...]):
    return (ctypes.c_uint64 * max(1, len(shape)))(*shape)


def c_rows_shape(lib, spec: dict, shape: tuple[int, ...]) -> tuple[int, int]:
    s, _knots = c_spec(spec)
    R, m = ctypes.c_uint64(), ctypes.c_uint64()
    lib.pc_init_rows_shape(ctypes.byref(s), c_shape(shape), len(shape), R, m)
    return R.value, m.value


def c_initial_rows(lib, spec, key, shape, dtype, rows=None) -> np.ndarray:
    """pc_init_rows' values of rows [r0, r1) as an (r1 - r0, m) storage array."""
    R, m = c_rows_shape(lib, spec, shape)
    assert (R, m) == row_shape(tuple(shape), spec["granularity"])
    r0, r1 = (0, R) if rows is None else rows
    out = np.zeros((r1 - r0) * m * STORAGE[dtype].itemsize + 1, dtype=np.uint8)
    out[-1] = 0xAB  # a guard byte past the end
    s, _knots = c_spec(spec)
    status = lib.pc_init_rows(
        ctypes.byref(s), key[0], key[1], DTYPE_CODE[dtype], R, m, r0, r1, out.ctypes.data
    )
    assert status == OK
    assert out[-1] == 0xAB
    return out[:-1].view(STORAGE[dtype]).reshape(r1 - r0, m)


def assert_same_rows(lib, spec, key, shape, dtype, rows=None):
    ref = initial_rows(spec, key, tuple(shape), dtype, rows=rows)
    got = c_initial_rows(lib, spec, key, shape, dtype, rows=rows)
    assert got.shape == ref.shape
    assert got.tobytes() == ref.tobytes(), (spec, shape, dtype, rows)


def c_check(lib, spec: dict, shape: tuple[int, ...], version: int = VERSION) -> str | None:
    """pc_init_check's message, or None when it accepts."""
    s, _knots = c_spec(spec)
    err = ctypes.create_string_buffer(200)
    status = lib.pc_init_check(ctypes.byref(s), c_shape(shape), len(shape), version, err, 200)
    assert status in (OK, E_SPEC)
    return None if status == OK else err.value.decode()


def py_check(spec: dict, shape: tuple[int, ...], version: int = VERSION) -> str | None:
    """check_resolved's message (plus the container's version rule), or None."""
    if version < KIND_SINCE.get(spec.get("kind"), 1):
        return "version"
    try:
        check_resolved(spec, shape)
    except PlanError as e:
        return str(e)
    return None


# ---------------------------------------------------------------- initial values

SPECS = [
    "uniform:a=-0.5,b=2",
    "uniform:a=3,b=3",
    "normal:mean=0.1,std=0.02",
    "trunc_normal:std=0.02,a=-0.04,b=0.04",
    "trunc_normal:mean=1,std=2,a=-9,b=30",
    "kaiming_uniform",
    "kaiming_uniform:mode=fan_out",
    "torch_default",
    "kaiming_normal",
    "kaiming_normal:mode=fan_out,gain=0.5",
    "xavier_uniform",
    "xavier_normal:gain=2",
    "constant:value=0.08",
    "constant:value=-0.0",
    "constant:value=0.08,random_sign=true",
    "two_value",
    "two_value:low=-0.25,high=4,p=0.3",
    "two_value:p=0",
    "two_value:p=1",
    {"kind": "quantile", "knots": [-1.0, -0.5, -0.0, 0.2, 3.0]},
    {"kind": "quantile", "knots": [0.5, 0.5]},
    "levels:levels=1,scale=0.5",
    "levels:levels=2,scale=0.5",
    "levels:levels=7,scale=0.03",
    "levels:levels=128,scale=1e-3",
]
SHAPES = [(), (1,), (7,), (1, 1), (0, 3), (3, 0), (2, 3), (5, 17), (4, 3, 2), (3, 2, 2, 5)]


def _with(spec, shape, density, granularity):
    s = resolve(spec if isinstance(spec, str) else dict(spec), shape)
    s["density"], s["granularity"] = density, granularity
    check_resolved(s, shape)
    return s


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("density", [1.0, 0.5, 0.05])
def test_every_kind_dtype_shape_and_row_range(lib, spec, density):
    for shape in SHAPES:
        for granularity in ("row", "tensor"):
            s = _with(spec, shape, density, granularity)
            R, _m = row_shape(shape, granularity)
            for dtype in FLOAT_DTYPES:
                assert_same_rows(lib, s, KEY, shape, dtype)
            ranges = {(0, R), (R // 2, R), (R // 3, R // 3), (max(R - 1, 0), R)}
            for rows in sorted(ranges):
                assert_same_rows(lib, s, KEY, shape, "float32", rows)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("spec", ["kaiming_normal", "levels:levels=3,scale=0.2", "two_value"])
def test_larger_rows(lib, dtype, spec):
    """Rows past the sorts' cut-overs and the generator's chunks and batches."""
    cases = [((3, 2500), 1.0, "row"), ((3, 2500), 0.3, "row"), ((2, 70, 5), 0.9, "row")]
    cases += [((300, 100), 0.3, "tensor"), ((300, 100), 0.999, "tensor")]
    for shape, density, granularity in cases:
        s = _with(spec, shape, density, granularity)
        R = row_shape(shape, granularity)[0]
        assert_same_rows(lib, s, (1, 2), shape, dtype)
        assert_same_rows(lib, s, (1, 2), shape, dtype, (R // 2, R))


def test_format_appendix_vectors(lib):
    """FORMAT B.2 and B.5, straight from the document."""
    got = c_initial_rows(lib, resolve("he_uniform", (2, 3)), KEY, (2, 3), "float32")
    assert got.view(np.uint32).ravel().tolist() == [
        0xBFADA921,
        0xBE93C970,
        0x3F87DCC9,
        0xBF8CA8F7,
        0xBFAAE680,
        0x3F5F6D7C,
    ]
    spec = resolve("levels:levels=2,scale=0.5,density=0.75", (2, 8))
    got = c_initial_rows(lib, spec, KEY, (2, 8), "float32").view(np.uint32).ravel()
    want = "3f133ea6 be2324b3 bf133ea6 00000000 3f133ea6 00000000 be2324b3 3e2324b3 "
    want += "00000000 3f133ea6 3e2324b3 be2324b3 3f133ea6 00000000 be2324b3 bf133ea6"
    assert got.tolist() == [int(x, 16) for x in want.split()]


@pytest.mark.parametrize(
    "spec",
    [
        "kaiming_uniform:gain=1e308",  # fan 1: the bound overflows, -inf + inf * u is NaN
        "xavier_normal:gain=1e308",  # +-inf
        "uniform:a=-1e308,b=1e308",  # span overflows
        "normal:mean=1e308,std=1e308",
        "trunc_normal:mean=0,std=1,a=-30,b=-20",  # alpha = beta = 0: ndtri(0)
        "trunc_normal:mean=0,std=1,a=20,b=30",  # alpha = beta = 1: ndtri(1)
        "trunc_normal:mean=-1e308,std=1e-300,a=1e308,b=1.5e308",
        "trunc_normal:mean=0,std=1e-300,a=-1e-310,b=5e-324",
        "constant:value=1e300,random_sign=true",  # float16 and float32 overflow
        "constant:value=1e-8",  # float16 subnormal, rounds
        "two_value:low=-1e-30,high=7e4,p=0.9999999",
        {"kind": "quantile", "knots": [-1e308, 1e308, 1e308]},
        {"kind": "quantile", "knots": [-3.0, -3.0, 1e-300, 2.0]},
        "levels:levels=4,scale=1e308",
        "levels:levels=3,scale=5e-324",
    ],
    ids=str,
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's overflows
def test_extreme_parameters(lib, spec):
    """Overflow, NaN, subnormals, clamps: the same bits as the reference, and the
    inf and NaN of masked positions (|v| * 0.0) as well."""
    for density in (1.0, 0.6, 0.0):
        for shape in [(3, 40), (1,), (4, 1)]:
            s = _with(spec, shape, density, "row")
            for dtype in FLOAT_DTYPES:
                assert_same_rows(lib, s, KEY, shape, dtype)


def _spec_strategy():
    pos = st.floats(1e-3, 1e3)
    val = st.floats(-1e3, 1e3)
    return st.one_of(
        st.builds(lambda a, w: f"uniform:a={a},b={a + w}", val, st.floats(0, 1e3)),
        st.builds(lambda m, s: f"normal:mean={m},std={s}", val, pos),
        st.builds(
            lambda m, s, a, w: f"trunc_normal:mean={m},std={s},a={a},b={a + w}",
            val,
            pos,
            val,
            pos,
        ),
        st.builds(
            lambda k, g, mode: f"{k}:gain={g},mode={mode}",
            st.sampled_from(["kaiming_uniform", "kaiming_normal"]),
            pos,
            st.sampled_from(["fan_in", "fan_out"]),
        ),
        st.builds(
            lambda k, g: f"{k}:gain={g}",
            st.sampled_from(["xavier_uniform", "xavier_normal"]),
            pos,
        ),
        st.builds(
            lambda v, r: f"constant:value={v},random_sign={r}",
            val,
            st.sampled_from(["true", "false"]),
        ),
        st.builds(
            lambda lo, hi, p: f"two_value:low={lo},high={hi},p={p}",
            val,
            val,
            st.floats(0, 1),
        ),
        st.builds(
            lambda ks: {"kind": "quantile", "knots": sorted(ks)},
            st.lists(val, min_size=2, max_size=40),
        ),
        st.builds(lambda n, s: f"levels:levels={n},scale={s}", st.integers(1, 128), pos),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=_spec_strategy(),
    key=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=4).map(tuple),
    density=st.one_of(st.just(1.0), st.floats(0, 1)),
    granularity=st.sampled_from(["row", "tensor"]),
    dtype=st.sampled_from(FLOAT_DTYPES),
    cut=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_matches_the_reference_property(lib, spec, key, shape, density, granularity, dtype, cut):
    s = _with(spec, shape, density, granularity)
    R, _m = row_shape(shape, granularity)
    assert c_check(lib, s, shape) is None
    assert_same_rows(lib, s, key, shape, dtype)
    r0, r1 = sorted(int(c * R) for c in cut)
    assert_same_rows(lib, s, key, shape, dtype, (r0, r1))


def test_enums_match_the_headers():
    """KIND_ORDER and DTYPE_CODE are csrc's enums, in their order."""

    def enum(text: str, first: str) -> list[str]:
        body = re.search(r"enum\s*{([^}]*" + first + r"[^}]*)}", text).group(1)
        return [re.sub(r"/\*.*?\*/", "", x).strip() for x in body.split(",") if x.strip()]

    kinds = enum((ROOT / "csrc" / "seeded_init.h").read_text(), "PC_KIND_UNIFORM")
    assert kinds == [f"PC_KIND_{k.upper()}" for k in KIND_ORDER] + ["PC_KIND_COUNT"]
    dtypes = enum((ROOT / "csrc" / "perm_format.h").read_text(), "PC_FLOAT64")
    for name, code in DTYPE_CODE.items():
        assert dtypes[code] == f"PC_{name.upper()}"


def test_bad_arguments(lib):
    s, _knots = c_spec(resolve("he_uniform", (2, 3)))
    out = np.zeros(16, dtype=np.float64)
    call = lib.pc_init_rows
    assert call(ctypes.byref(s), 1, 2, 4, 2, 3, 0, 2, out.ctypes.data) == E_ARGUMENT  # int64
    assert call(ctypes.byref(s), 1, 2, 1, 2, 3, 1, 0, out.ctypes.data) == E_ARGUMENT  # r0 > r1
    assert call(ctypes.byref(s), 1, 2, 1, 2, 3, 0, 3, out.ctypes.data) == E_ARGUMENT  # r1 > R
    assert call(ctypes.byref(s), 1, 2, 1, 2**33, 2**33, 0, 0, None) == E_ARGUMENT  # R m
    assert call(ctypes.byref(s), 1, 2, 1, 2, 3, 1, 1, None) == OK  # no rows: nothing written
    s, _knots = c_spec(resolve("levels:scale=1", (1, 5)))
    assert call(ctypes.byref(s), 1, 2, 1, 1, 2**32 + 1, 0, 1, None) == E_RANGE
    n = ctypes.c_uint64(7)
    assert lib.pc_row_classes(9, out.ctypes.data, 3, None, None, None, n) == E_ARGUMENT
    assert lib.pc_row_classes(1, None, 0, None, None, None, n) == OK and n.value == 0


# ---------------------------------------------------------------- FORMAT 7, 6.8


def test_deterministic_math(lib):
    """log, sqrt, ndtri (7.0-7.2) on arrays of binary64; exp and ndtr (7.3, 7.4)."""
    rng = np.random.default_rng(7)
    probe = np.vectorize(lib.pc_probe_math, otypes=[np.float64])
    u = np.concatenate(
        [
            (rng.integers(0, 2**32, 20000) + 0.5) * 2.0**-32,
            rng.random(5000),
            [2.0**-33, 0.5 + 2.0**-33, 1 - 2.0**-33, 0.075, 0.925, 0.0, 1.0, 5e-324, 1e-300],
            [0.5 - 0.425, 0.5 + 0.425, np.nextafter(0.075, 1), np.nextafter(0.925, 0)],
        ]
    )
    # outside the domains too: the same bits from the same operations
    odd = [-0.0, -1.0, 2.0, 1e300, -1e-310, 5e-324, math.inf, -math.inf, math.nan, -math.nan]
    u = np.concatenate([u, odd, rng.random(300) * 4 - 2])
    bits = lambda x: np.asarray(x, dtype=np.float64).view(np.int64).tolist()  # noqa: E731
    with np.errstate(all="ignore"):
        ref = detmath.ndtri(u)
        assert bits(probe(2, u)) == bits(ref)
        many = np.zeros_like(u)  # the generator's path: blocks of central and tail values
        assert lib.pc_probe_ndtri_many(u.ctypes.data, u.size, many.ctypes.data) == OK
        assert bits(many) == bits(ref)
        x = np.concatenate(
            [u[u > 0], rng.random(2000) * 1e6, 2.0 ** rng.integers(-1000, 1000, 500), odd]
        )
        assert bits(probe(0, x)) == bits(detmath.log(x))
        assert bits(probe(1, x)) == bits(detmath.sqrt(x))
    ys = np.concatenate([-rng.random(20000) * 32, [0.0, -0.0, -2.0, -0.5, -31.99]])
    assert bits(probe(3, ys)) == bits([detmath.exp_scalar(float(y)) for y in ys])
    xs = np.concatenate(
        [
            rng.normal(0, 4, 5000),
            [0.0, -0.0, 8.0, -8.0, 7.999, -7.999, 1e-300, 5e-324, 40.0, math.inf, -math.inf],
        ]
    )
    assert bits(probe(4, xs)) == bits([detmath.ndtr_scalar(float(x)) for x in xs])


def test_float16_cast(lib):
    """binary32 -> binary16 by hand: numpy's cast on random patterns, every rounding
    boundary and the specials (an exhaustive run over all 2**32 patterns agreed)."""
    rng = np.random.default_rng(3)
    exps = np.arange(0x60, 0x91, dtype=np.uint32) << 23  # |x| from 2**-31 to 2**17
    low = np.array([0, 1, 0xFFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x3000, 0x7FE000, 0x7FF000])
    low = np.concatenate([low, low | 0x7FE000, low | 0x2000, rng.integers(0, 1 << 23, 40)])
    edges = (exps[:, None] | low[None, :].astype(np.uint32)).ravel()
    specials = [0x7F800000, 0x7F800001, 0x7FC00000, 0x7FFFFFFF, 0x7F802000, 0x477FF000]
    specials += [0x477FEFFF, 0x33000000, 0x33000001, 0x387FE000, 0x387FF000, 0x38800000]
    x = np.concatenate([edges, specials, rng.integers(0, 2**32, 30000)]).astype(np.uint32)
    x = np.concatenate([x, x ^ np.uint32(0x80000000)])
    with np.errstate(over="ignore"):
        ref = x.view(np.float32).astype(np.float16).view(np.uint16)
    got = np.array([lib.pc_probe_f16(int(b)) for b in x], dtype=np.uint16)
    assert got.tolist() == ref.tolist()


# ---------------------------------------------------------------- row classes (5.1)


def c_row_classes(lib, row: np.ndarray, dtype: str):
    m = row.size
    row = np.ascontiguousarray(row)
    order = np.zeros(m, dtype=np.uint32)
    counts = np.zeros(m, dtype=np.uint64)
    values = np.zeros(m, dtype=STORAGE[dtype])
    n = ctypes.c_uint64()
    code, data = DTYPE_CODE[dtype], row.ctypes.data
    status = lib.pc_row_classes(
        code, data, m, order.ctypes.data, counts.ctypes.data, values.ctypes.data, n
    )
    assert status == OK
    k = n.value
    # the counts alone, without order and values
    counts2 = np.zeros(m, dtype=np.uint64)
    assert lib.pc_row_classes(code, data, m, None, counts2.ctypes.data, None, n) == OK
    assert n.value == k and counts2.tolist() == counts.tolist()
    return order, counts[:k], values[:k]


def assert_same_classes(lib, init: np.ndarray, dtype: str):
    rc, cls = init_classes(init, order_keys(init, dtype))
    keys = order_keys(init, dtype)
    for r in range(init.shape[0]):
        order, counts, values = c_row_classes(lib, init[r], dtype)
        assert order.tolist() == np.argsort(keys[r], kind="stable").tolist()
        n = len(counts)
        ref_counts = rc.counts[r]
        assert counts.tolist() == ref_counts[:n].tolist() and not ref_counts[n:].any()
        assert values.tobytes() == rc.values[r, :n].tobytes()
        class_of_sorted = np.repeat(np.arange(n), counts.astype(np.int64))
        assert class_of_sorted.tolist() == np.asarray(rc.class_of_sorted[r]).tolist()
        position_class = np.empty(init.shape[1], dtype=np.int64)
        position_class[order] = class_of_sorted
        assert position_class.tolist() == cls[r].tolist()
        assert values[position_class].tobytes() == init[r].tobytes()  # rebuilt


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    "spec",
    [
        "kaiming_normal",
        "normal:std=0.02,density=0.4",
        "levels:levels=3,scale=0.1,density=0.8",
        "constant:value=0.5,random_sign=true",
        "two_value:p=0.2,density=0.7",
        "kaiming_uniform:gain=1e308",  # NaNs
    ],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's overflows
def test_row_classes_match_arrangement(lib, dtype, spec):
    for shape in [(4, 9), (3, 700), (1, 1)]:
        s = resolve(spec, shape)
        assert_same_classes(lib, initial_rows(s, KEY, shape, dtype), dtype)


@settings(max_examples=150, deadline=None)
@given(
    dtype=st.sampled_from(FLOAT_DTYPES),
    m=st.integers(1, 600),
    seed=st.integers(0, 2**32 - 1),
    alphabet=st.integers(1, 70000),
)
def test_row_classes_of_any_bits(lib, dtype, m, seed, alphabet):
    """Arbitrary patterns (NaNs, -0.0, infinities included) with repeats."""
    rng = np.random.default_rng(seed)
    width = STORAGE[dtype].itemsize * 8
    pool = rng.integers(0, 2**64, alphabet, dtype=np.uint64) >> np.uint64(64 - width)
    sign = 1 << (width - 1)
    special = [0, sign, 1, sign + 1, 2 * sign - 1, sign - 1]  # +-0, +-tiny, NaNs
    pool[: min(alphabet, 6)] = special[: min(alphabet, 6)]
    bits = rng.choice(pool, m).astype(f"<u{width // 8}")
    assert_same_classes(lib, bits.view(STORAGE[dtype]).reshape(1, m), dtype)


# ---------------------------------------------------------------- spec checks (9.8)


def _bad(base, shape=(4, 6), **changes):
    s = resolve(base, shape)
    s.update(changes)
    return s, shape


BAD_SPECS = [
    _bad("normal", std=0.0),
    _bad("normal", std=-1.0),
    _bad("normal", mean=math.inf),
    _bad("normal", std=math.nan),
    _bad("trunc_normal", a=1.0, b=1.0),
    _bad("trunc_normal", a=2.0, b=1.0),
    _bad("trunc_normal", b=math.inf),
    _bad("uniform:a=0,b=1", a=2.0),
    _bad("uniform:a=0,b=1", b=-math.inf),
    _bad("two_value", p=1.5),
    _bad("two_value", p=-0.1),
    _bad("two_value", p=math.nan),
    _bad("two_value", high=math.inf),
    _bad("kaiming_uniform", gain=math.nan),
    _bad("xavier_normal", gain=-math.inf),
    _bad("constant:value=1", value=math.nan),
    _bad("he_uniform", fan_in=5),
    _bad("he_uniform", fan_out=0),
    _bad("he_uniform", shape=(3, 2, 2), fan_in=2),
    _bad("normal", shape=(7,), fan_out=1),
    _bad("normal", shape=(), fan_in=0),
    _bad("normal", density=1.5),
    _bad("normal", density=-0.0001),
    _bad("normal", density=math.nan),
    _bad("normal", version=2),
    _bad("normal", version=0),
    _bad({"kind": "quantile", "knots": [1.0, 2.0]}, knots=[1.0]),
    _bad({"kind": "quantile", "knots": [1.0, 2.0]}, knots=[0.0] * 4098),
    _bad({"kind": "quantile", "knots": [1.0, 2.0]}, knots=[0.0, math.inf]),
    _bad({"kind": "quantile", "knots": [1.0, 2.0]}, knots=[math.nan, 1.0]),
    _bad({"kind": "quantile", "knots": [1.0, 2.0]}, knots=[1.0, 2.0, 1.5]),
    _bad("levels:scale=1", levels=0.0),
    _bad("levels:scale=1", levels=129.0),
    _bad("levels:scale=1", levels=2.5),
    _bad("levels:scale=1", levels=math.inf),
    _bad("levels:scale=1", scale=0.0),
    _bad("levels:scale=1", scale=-1.0),
    _bad("levels:scale=1", scale=math.inf),
]
GOOD_SPECS = [
    _bad("he_uniform", shape=(0, 5)),
    _bad("he_normal:mode=fan_out", shape=(3, 0)),  # empty: a zero fan is fine
    _bad("xavier_uniform", shape=(0,)),
    _bad("normal", shape=()),
    _bad("normal", density=0.0),
    _bad("normal", std=1e-300),
    _bad("uniform:a=1,b=1"),
    _bad("two_value", p=0.0),
    _bad("two_value", p=1.0),
    _bad({"kind": "quantile", "knots": [1.0, 2.0]}, knots=[0.0] * 4097),
    _bad({"kind": "quantile", "knots": [1.0, 2.0]}, knots=[-1.0, -1.0]),
    _bad("levels:scale=1", levels=128.0),
    _bad("levels:scale=1", levels=1.0, scale=5e-324),
    _bad("he_uniform", shape=(5, 3, 0, 7)),
]


@pytest.mark.parametrize("case", range(len(BAD_SPECS)))
def test_check_refuses_what_check_resolved_refuses(lib, case):
    spec, shape = BAD_SPECS[case]
    assert py_check(spec, shape) is not None
    msg = c_check(lib, spec, shape)
    assert msg and "\n" not in msg


@pytest.mark.parametrize("case", range(len(GOOD_SPECS)))
def test_check_accepts_what_check_resolved_accepts(lib, case):
    spec, shape = GOOD_SPECS[case]
    assert py_check(spec, shape) is None
    assert c_check(lib, spec, shape) is None


def test_check_fans_and_versions(lib):
    # an empty shape whose true fan_out is 2**117: no stored fan (< 2**64) matches it,
    # not even that fan modulo 2**64
    shape = (2**39, 0, 2**39, 2**39)
    assert fans(shape) == (0, 2**117)
    spec = resolve("normal", (1,))
    spec["fan_in"], spec["fan_out"] = 0, 0
    assert py_check(spec, shape) is not None and c_check(lib, spec, shape) is not None
    spec["fan_in"], spec["fan_out"] = fans((3, 0, 2**30, 2**30))
    assert py_check(spec, (3, 0, 2**30, 2**30)) is None
    assert c_check(lib, spec, (3, 0, 2**30, 2**30)) is None
    # the format version each kind needs
    quantile = resolve({"kind": "quantile", "knots": [1.0, 2.0]}, (2, 2))
    levels = resolve("levels:scale=1", (2, 2))
    for spec, since in ((quantile, 2), (levels, 5), (resolve("normal", (2, 2)), 1)):
        assert c_check(lib, spec, (2, 2), since) is None
        assert (c_check(lib, spec, (2, 2), since - 1) is None) == (since == 1)
    assert set(KINDS) == set(KIND_ORDER)
    # a message fits the buffer it is given, truncated
    s, _knots = c_spec(_bad("normal", std=0.0)[0])
    err = ctypes.create_string_buffer(b"x" * 8)
    assert lib.pc_init_check(ctypes.byref(s), c_shape((4, 6)), 2, 6, err, 8) == E_SPEC
    assert len(err.value) == 7
    assert lib.pc_init_check(ctypes.byref(s), c_shape((4, 6)), 2, 6, None, 0) == E_SPEC


@settings(max_examples=300, deadline=None)
@given(
    spec=_spec_strategy(),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple),
    other=st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple),
    field=st.sampled_from([*PARAMS, "density"]),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -0.0, 1.0, 0.5, 128.0, 129.0, -1.0, 2.0]),
    ),
)
def test_check_agrees_property(lib, spec, shape, other, field, value):
    """Specs resolved for one shape, checked against another, with one field changed."""
    s = resolve(spec, shape)
    if field in s:
        s[field] = value
    assert (py_check(s, other) is None) == (c_check(lib, s, other) is None)
