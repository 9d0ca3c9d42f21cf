"""Core round trips (numpy only): seeded and raw tensors, the rANS coder, sizes, errors."""

from __future__ import annotations

import math
import os
import struct

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import permcodec
from permcodec import InitSpec, NotAnArrangementError
from permcodec import numpy as pnp
from permcodec.coding import arrangement, rans
from permcodec.core import dtypes
from permcodec.core.initializers import initial_rows as init_rows
from permcodec.core.plan import Plan
from permcodec.format.writer import encode_entry, write_file

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
#: Non-seeded tensors are stored zstd-compressed, or as plain bytes where zstd would grow them.
RAW_CODINGS = ("raw-zstd", "raw")

SHAPES = st.one_of(
    st.tuples(st.integers(1, 12), st.integers(1, 40)),
    st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(1, 40)),
)


def _user_array(storage: np.ndarray, dtype: str) -> np.ndarray:
    """What a numpy user holds: bfloat16 as ml_dtypes.bfloat16."""
    return storage.view(ml_dtypes.bfloat16) if dtype == "bfloat16" else storage


def _storage(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16) if a.dtype == ml_dtypes.bfloat16 else a


def _row_bound(init: np.ndarray, dtype: str) -> float:
    """Independent B = sum_rows log2(m!) - sum_v log2(c_v!), from np.unique per row."""
    keys = dtypes.order_keys(init, dtype)
    total = 0.0
    for row in keys:
        m = row.shape[0]
        _, counts = np.unique(row, return_counts=True)
        total += math.lgamma(m + 1) - sum(math.lgamma(c + 1) for c in counts)
    return total / math.log(2.0)


# ---------------------------------------------------------------- seeded round trip


@settings(max_examples=150, deadline=None)
@given(
    shape=SHAPES,
    dtype=st.sampled_from(FLOAT_DTYPES),
    case=st.integers(0, 12),
    density=st.sampled_from([1.0, 0.3, 0.75, 0.0]),
    granularity=st.sampled_from(["row", "tensor"]),
    seed=st.integers(0, 2**64 - 1),
    perm_seed=st.integers(0, 2**32 - 1),
    writer=st.sampled_from(["numpy.save", "write_file"]),
)
def test_seeded_tensor_round_trip(
    shape,
    dtype,
    case,
    density,
    granularity,
    seed,
    perm_seed,
    writer,
    spec_cases,
    spec_of,
    permute_rows,
    tmp_path_factory,
):
    spec = spec_of(spec_cases[case], density=density, granularity=granularity)
    plan = Plan(seed)
    tp = plan.add("layer.weight", spec, shape)
    init = init_rows(tp.spec, tp.key, shape, dtype)
    assert init.dtype == dtypes.STORAGE[dtype]
    trained = permute_rows(init, np.random.default_rng(perm_seed)).reshape(shape)
    bias = np.random.default_rng(perm_seed).standard_normal(shape[0]).astype(np.float32)

    path = tmp_path_factory.mktemp("rt") / "m.perm"
    if writer == "numpy.save":
        pnp.save(
            {"layer.weight": _user_array(trained, dtype), "layer.bias": bias},
            path,
            plan,
            metadata={"k": "v"},
        )
    else:
        write_file(
            path,
            [("layer.weight", trained, dtype), ("layer.bias", bias, "float32")],
            plan,
            metadata={"k": "v"},
        )

    loaded = permcodec.load_numpy(path)
    assert list(loaded) == ["layer.weight", "layer.bias"]
    w = loaded["layer.weight"]
    if dtype == "bfloat16":
        assert w.dtype == ml_dtypes.bfloat16
    else:
        assert w.dtype == dtypes.STORAGE[dtype]
    assert w.shape == shape
    assert _storage(w).tobytes() == trained.tobytes()
    assert loaded["layer.bias"].tobytes() == bias.tobytes()

    with permcodec.open(path) as pf:
        assert pf.keys() == ["layer.weight", "layer.bias"]
        assert pf.metadata == {"k": "v"}
        assert pf.header["seed"] == seed
        e = pf.entry("layer.weight")
        assert e.coding == "row-rans" and e.dtype == dtype
        assert pf.entry("layer.bias").coding in RAW_CODINGS
        t = pf.storage("layer.weight")
        assert t.dtype == dtypes.STORAGE[dtype]
        assert t.tobytes() == trained.tobytes()
        # get_tensor: bfloat16 as ml_dtypes.bfloat16, as load_numpy gives it
        assert pf.get_tensor("layer.weight").dtype == loaded["layer.weight"].dtype
        assert pf.verify() == []
        # the recorded bound is B of the seeded rows
        assert e.fields["bound_bits"] == pytest.approx(_row_bound(init, dtype), rel=1e-9, abs=1e-6)


# ---------------------------------------------------------------- raw tensors

RAW = {
    "step": np.array(0, dtype=np.int64),
    "big_step": np.array(-(2**62) - 7, dtype=np.int64),
    "flags": np.array([True, False, True, True]),
    "q": np.arange(-128, 128, 3, dtype=np.int8),
    "pix": np.arange(0, 256, 5, dtype=np.uint8),
    "i16": np.array([[-32768, 32767], [0, 1]], dtype=np.int16),
    "i32": np.arange(-5, 5, dtype=np.int32).reshape(2, 5),
    "fc.bias": np.random.default_rng(0).standard_normal(13).astype(np.float32),
    "bn.var": np.random.default_rng(1).random(7).astype(np.float16),
    "f64": np.random.default_rng(2).standard_normal((3, 4)),
    "bf": np.random.default_rng(3).standard_normal(5).astype(np.float32).astype(ml_dtypes.bfloat16),
    "scalar_f": np.array(-0.0, dtype=np.float32),
    "empty": np.zeros((0,), dtype=np.float32),
    "empty2": np.zeros((0, 3), dtype=np.int64),
    "empty3": np.zeros((4, 0, 2), dtype=np.float16),
    "nan_inf": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45], dtype=np.float32),
}


@pytest.mark.parametrize("with_plan", [False, True])
def test_raw_tensors_round_trip(tmp_path, with_plan):
    plan = None
    tensors = dict(RAW)
    if with_plan:  # raw tensors sit beside a seeded one
        plan = Plan(1)
        tp = plan.add("w", "he_uniform", (3, 4))
        tensors["w"] = init_rows(tp.spec, tp.key, (3, 4), "float32").reshape(3, 4)[:, ::-1]
    path = tmp_path / "raw.perm"
    pnp.save(tensors, path, plan)
    out = permcodec.load_numpy(path)
    assert list(out) == list(tensors)
    for k, a in tensors.items():
        assert out[k].dtype == a.dtype, k
        assert out[k].shape == a.shape, k
        assert out[k].tobytes() == np.ascontiguousarray(a).tobytes(), k
    with permcodec.open(path) as pf:
        for k in RAW:
            e = pf.entry(k)
            nbytes = RAW[k].nbytes
            assert e.coding in RAW_CODINGS, k
            assert e.length <= nbytes or (e.coding == "raw-zstd" and nbytes == 0), k
            if e.coding == "raw":
                assert e.length == nbytes
            assert list(e.shape) == list(RAW[k].shape), k
            assert pf.tensor(k).tobytes() == _storage(np.ascontiguousarray(RAW[k])).tobytes()
        if with_plan:
            assert pf.entry("w").coding == "row-rans"
        info = pf.info()
        assert info["file_bytes"] == os.path.getsize(path)
        assert info["seed"] == (1 if with_plan else None)
        by_name = {r["name"]: r for r in info["tensors"]}
        assert by_name["step"]["numel"] == 1 and by_name["empty2"]["numel"] == 0


def test_raw_tensors_via_write_file(tmp_path):
    items = [(k, _storage(np.ascontiguousarray(a)), pnp.dtype_name(a)) for k, a in RAW.items()]
    header = write_file(tmp_path / "r.perm", items, None)
    assert all(t["coding"] in RAW_CODINGS for t in header["tensors"])
    with permcodec.open(tmp_path / "r.perm") as pf:
        for name, storage, dt in items:
            got = pf.tensor(name)
            assert pf.entry(name).dtype == dt
            assert got.tobytes() == storage.tobytes() and got.shape == storage.shape


def test_non_contiguous_and_big_endian_inputs(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    b = np.arange(5, dtype=">f8")
    pnp.save({"a": a, "b": b}, tmp_path / "x.perm", None)
    out = permcodec.load_numpy(tmp_path / "x.perm")
    assert np.array_equal(out["a"], a) and out["a"].dtype == np.float32
    assert np.array_equal(out["b"], b) and out["b"].dtype == np.float64


# ---------------------------------------------------------------- rANS


@settings(max_examples=250, deadline=None)
@given(data=st.data())
def test_rans_encode_decode_inverse(data):
    rows = data.draw(st.integers(1, 8), label="rows")
    m = data.draw(st.integers(0, 40), label="m")
    n_cls = data.draw(st.integers(1, 6), label="classes")
    seqs = data.draw(
        st.lists(
            st.lists(st.integers(0, n_cls - 1), min_size=m, max_size=m),
            min_size=rows,
            max_size=rows,
        ),
        label="rows of classes",
    )
    cls = np.array(seqs, dtype=np.int64).reshape(rows, m)
    counts = np.stack([np.bincount(r, minlength=n_cls) for r in cls]).astype(np.int64)
    lanes = data.draw(st.integers(1, rows), label="lanes")

    states, words = rans.encode(cls, counts, lanes)
    assert states.dtype == np.uint64 and states.shape == (lanes,)
    assert words.dtype == np.uint32 and words.ndim == 1
    out = rans.decode(states, words, counts, m)
    assert out.dtype == np.int64
    assert np.array_equal(out, cls)
    # within a lane state of the bound
    bits = 64 * lanes + 32 * words.shape[0]
    assert bits <= arrangement.bound_bits(counts) + 64 * lanes + 1e-3 * rows * m + 1


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_rans_decode_rejects_a_damaged_stream(data):
    rows, m = 3, 30
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    cls = np.stack([rng.permutation(30) for _ in range(rows)]).astype(np.int64)
    counts = np.ones((rows, 30), dtype=np.int64)
    states, words = rans.encode(cls, counts, 1)
    assert words.size > 1
    cut = data.draw(st.integers(0, words.size - 1))
    with pytest.raises(permcodec.IntegrityError):
        rans.decode(states, words[:cut], counts, m)


def test_choose_lanes():
    assert rans.choose_lanes(1, 1e9, 784) == 1
    assert rans.choose_lanes(300, 0.0, 784) == 1
    assert rans.choose_lanes(300, 1.92e6, 100) == 120
    assert rans.choose_lanes(10, 1e9, 100) == 10
    assert rans.choose_lanes(256, 1e9, 12544) == 2  # groups of at most GROUP_VALUES


# ---------------------------------------------------------------- sizes


def _permuted(plan, name, spec, shape, dtype, rng, permute_rows):
    tp = plan.add(name, spec, shape)
    init = init_rows(tp.spec, tp.key, shape, dtype)
    return tp, init, permute_rows(init, rng).reshape(shape)


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((300, 784), "float32"), ((64, 16, 3, 3), "float32"), ((64, 16, 3, 3), "float16")],
    ids=["fc300x784", "conv64x144", "conv64x144-f16"],
)
def test_payload_within_one_percent_of_bound(shape, dtype, permute_rows):
    plan = Plan(7)
    tp, init, trained = _permuted(
        plan, "w", "he_uniform", shape, dtype, np.random.default_rng(0), permute_rows
    )
    entry, payload = encode_entry("w", trained, dtype, tp)
    bound = entry["bound_bits"]
    assert bound == pytest.approx(_row_bound(init, dtype), rel=1e-9)
    rows, m = init.shape
    all_distinct = rows * math.lgamma(m + 1) / math.log(2)
    assert bound <= all_distinct + 1e-6
    if dtype == "float32":  # nearly all values distinct (a few float32 collisions)
        assert bound >= all_distinct - 64
    assert 8 * len(payload) <= 1.01 * bound + 96
    assert 8 * len(payload) >= bound  # no coder beats the bound


def test_whole_file_size_against_bound(tmp_path, permute_rows):
    rng = np.random.default_rng(11)
    plan = Plan(2020)
    tensors = {}
    for name, shape in [("fc1.weight", (300, 784)), ("conv.weight", (64, 16, 3, 3))]:
        _, _, tensors[name] = _permuted(
            plan, name, "he_uniform", shape, "float32", rng, permute_rows
        )
    tensors["fc1.bias"] = rng.standard_normal(300).astype(np.float32)
    tensors["steps"] = np.array(12345, dtype=np.int64)
    path = tmp_path / "model.perm"
    pnp.save(tensors, path, plan)

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(24)[16:24])
    header_bytes = 24 + hlen
    with permcodec.open(path) as pf:
        entries = pf.header["tensors"]
        info = pf.info()
    bound = sum(e["bound_bits"] for e in entries if e["coding"] == "row-rans")
    raw_bits = sum(8 * e["length"] for e in entries if e["coding"] in RAW_CODINGS)
    assert 8 * size <= 1.01 * bound + raw_bits + 8 * header_bytes + 64 * 8 + 256
    assert info["file_bytes"] == size
    for row in info["tensors"]:
        if row["coding"] == "row-rans":
            assert 1.0 <= row["ratio_to_bound"] <= 1.01
    assert info["ratio_vs_float32"] == pytest.approx(32 * info["numel"] / (8 * size))


def test_sparse_bound_is_that_of_one_zero_class(permute_rows):
    """With density d, a row keeps k = floor(d*m + 0.5) values and m - k zeros that are
    all +0.0, one class: B = log2(m! / (m - k)!) per row, less the (rare) float32 ties."""
    shape = (20, 784)
    plan = Plan(3)
    tp, init, trained = _permuted(
        plan,
        "w",
        InitSpec("he_uniform", density=0.3),
        shape,
        "float32",
        np.random.default_rng(1),
        permute_rows,
    )
    entry, _ = encode_entry("w", trained, "float32", tp)
    m, k = 784, math.floor(0.3 * 784 + 0.5)
    assert ((init == 0).sum(axis=1) == m - k).all()
    ties = 0.0
    for row in init:
        _, c = np.unique(row[row != 0], return_counts=True)
        ties += sum(math.lgamma(x + 1) for x in c)
    expect = (20 * (math.lgamma(m + 1) - math.lgamma(m - k + 1)) - ties) / math.log(2)
    assert entry["bound_bits"] == pytest.approx(expect, rel=1e-9)
    assert entry["bound_bits"] == pytest.approx(_row_bound(init, "float32"), rel=1e-9)


# ---------------------------------------------------------------- not an arrangement


def _two_tensor_model(permute_rows):
    plan = Plan(5)
    rng = np.random.default_rng(5)
    t = {}
    for name, shape in [("a.weight", (6, 10)), ("b.weight", (8, 12))]:
        _, _, t[name] = _permuted(plan, name, "he_uniform", shape, "float32", rng, permute_rows)
    return plan, t


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("damage", ["nudge", "swap_rows", "duplicate", "scale"])
def test_encoder_refuses_non_arrangement(tmp_path, permute_rows, existing, damage):
    plan, t = _two_tensor_model(permute_rows)
    w = t["b.weight"].copy()
    if damage == "nudge":  # one value moved by one ulp
        w[3, 4] = np.nextafter(w[3, 4], np.float32(np.inf))
    elif damage == "swap_rows":  # a value taken from another row
        w[3, 0], w[5, 0] = w[5, 0], w[3, 0]
    elif damage == "duplicate":  # same size, one value repeated in place of another
        w[3, 1] = w[3, 2]
    else:
        w[3] *= 2
    t["b.weight"] = w
    path = tmp_path / "out.perm"
    if existing:
        path.write_bytes(b"previous contents")
    with pytest.raises(NotAnArrangementError) as exc:
        pnp.save(t, path, plan)
    err = exc.value
    assert isinstance(err, permcodec.PermcodecError) and isinstance(err, ValueError)
    assert err.tensor == "b.weight"
    assert err.row == 3
    assert "'b.weight'" in str(err) and "row 3" in str(err)
    if existing:
        assert path.read_bytes() == b"previous contents"
    else:
        assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.perm"] if existing else [])


def test_encoder_refuses_via_write_file_and_names_first_bad_row(tmp_path, permute_rows):
    plan, t = _two_tensor_model(permute_rows)
    a = t["a.weight"].copy()
    a[2, 0] = 0.0
    a[4, 0] = 0.0
    with pytest.raises(NotAnArrangementError) as exc:
        write_file(
            tmp_path / "x.perm", [(k, v, "float32") for k, v in {**t, "a.weight": a}.items()], plan
        )
    assert (exc.value.tensor, exc.value.row) == ("a.weight", 2)
    assert "2 bad row(s)" in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_seeded_tensor_must_match_plan_shape_and_dtype(tmp_path, permute_rows):
    plan, t = _two_tensor_model(permute_rows)
    bad_shape = {**t, "a.weight": t["a.weight"].reshape(10, 6)}
    with pytest.raises(permcodec.PlanError, match=r"a\.weight"):
        pnp.save(bad_shape, tmp_path / "x.perm", plan)
    bad_dtype = {**t, "a.weight": t["a.weight"].astype(np.int32)}
    with pytest.raises(permcodec.PlanError, match=r"a\.weight"):
        pnp.save(bad_dtype, tmp_path / "x.perm", plan)
    missing = {"a.weight": t["a.weight"]}
    with pytest.raises(permcodec.PermcodecError, match=r"b\.weight"):
        pnp.save(missing, tmp_path / "x.perm", plan)
    assert list(tmp_path.iterdir()) == []


def test_loader_detects_corruption(tmp_path, permute_rows):
    plan, t = _two_tensor_model(permute_rows)
    path = tmp_path / "m.perm"
    pnp.save(t, path, plan)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01  # inside the last payload
    path.write_bytes(bytes(data))
    with pytest.raises(permcodec.FormatError):
        permcodec.load_numpy(path)
    path.write_bytes(b"not a perm file at all, just some bytes" * 3)
    with pytest.raises(permcodec.FormatError, match="magic"):
        permcodec.open(path)


def test_compressible_raw_tensor_uses_zstd_and_incompressible_stays_small(tmp_path):
    zeros = np.zeros((64, 64), dtype=np.float32)
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)
    pnp.save({"zeros": zeros, "noise": noise}, tmp_path / "z.perm", None)
    with permcodec.open(tmp_path / "z.perm") as pf:
        assert pf.entry("zeros").coding == "raw-zstd"
        assert pf.entry("zeros").length < zeros.nbytes // 20
        assert pf.entry("noise").length <= noise.nbytes
        assert pf.tensor("zeros").tobytes() == zeros.tobytes()
        assert pf.tensor("noise").tobytes() == noise.tobytes()


@pytest.mark.parametrize("threads", ["2", "3"])
def test_threads_decode_the_same_tensors_and_report_the_first_damage(
    tmp_path, monkeypatch, threads
):
    """With PERMCODEC_THREADS > 1 a file's tensors decode several at once (the largest on
    threads of its own): the same arrays in file order, and a damaged file names its
    first damaged tensor, as one thread does."""
    plan = Plan(11)
    rng = np.random.default_rng(0)
    tensors = {}
    for i, shape in enumerate([(300, 200), (8, 9), (64, 40), (5,), (40, 30)]):
        if len(shape) == 1:
            tensors[f"b{i}"] = rng.normal(size=shape).astype(np.float32)
            continue
        tp = plan.add(f"w{i}", InitSpec("he_uniform"), shape)
        init = init_rows(tp.spec, tp.key, shape, "float32")
        tensors[f"w{i}"] = rng.permuted(init, axis=1).reshape(shape)
    path = tmp_path / "m.perm"
    pnp.save(tensors, path, plan)
    monkeypatch.setenv("PERMCODEC_THREADS", threads)
    got = permcodec.load_numpy(path)
    assert list(got) == list(tensors)
    assert all(got[k].tobytes() == v.tobytes() for k, v in tensors.items())
    with permcodec.open(path) as pf:
        first, last = pf.entry("w2"), pf.entry("w4")
        start = pf.data_offset
    raw = bytearray(path.read_bytes())
    for e in (last, first):  # flip a byte inside the payloads of w4 and of w2
        raw[start + e.offset + e.length // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    with (
        pytest.raises(permcodec.IntegrityError, match="'w2'"),
        permcodec.open(path, strict=False) as pf,
    ):
        dict(pf.tensors())
