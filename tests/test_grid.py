"""``grid-rans`` (format 6): weight matrices of models trained without permutation, on a
grid of steps per row, coded with static tables; and the rate and error targets that
choose the steps."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import permcodec
from permcodec import FormatError, IntegrityError, LossyWarning
from permcodec.coding import grid_fit, grid_rans, static_rans
from permcodec.coding.base import Meta
from permcodec.core.dtypes import as_float64, from_float32
from permcodec.format import posthoc
from permcodec.format.entry import decode_bytes
from permcodec.format.reader import PermFile
from permcodec.format.writer import write_file

DTYPES = ["float32", "float16", "bfloat16", "float64"]


def _matrix(rng: np.random.Generator, rows: int, m: int, dtype: str) -> np.ndarray:
    """Rows of different scales, a few far outliers, in the storage form of ``dtype``."""
    w = rng.standard_normal((rows, m)) * rng.uniform(0.01, 2.0, rows)[:, None]
    if rows * m > 4:
        w.flat[rng.integers(0, rows * m, 2)] *= 1e3
    return from_float32(w.astype(np.float32), dtype)


def _decode(fields: dict, payload: bytes, shape: tuple, dtype: str) -> np.ndarray:
    """Decode one entry's payload as a reader does, digests aside."""
    coding = grid_rans.GridRans()
    return coding.decode(coding.parse(fields, Meta("w", tuple(shape), dtype)), payload)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_grids_round_trip_bit_for_bit_and_the_kernel_is_the_reference(data):
    rows = data.draw(st.integers(1, 12), label="rows")
    m = data.draw(st.integers(1, 96), label="m")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = _matrix(rng, rows, m, dtype)
    steps = rng.uniform(1e-3, 1.0, rows) ** data.draw(st.sampled_from([1, 3]))
    grid = grid_fit.fit_grid(w, dtype, steps, max_tables=data.draw(st.sampled_from([1, 4, 16])))
    lanes = data.draw(st.integers(1, rows), label="lanes")

    fast = static_rans.encode(grid.symbols, grid.tables, lanes)
    ref = static_rans.encode_ref(grid.symbols, grid.tables, lanes)
    for got, want in zip(fast, ref, strict=True):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    sym, esc = static_rans.decode(*fast, grid.tables, m)
    sym_ref, esc_ref = static_rans.decode_ref(*fast, grid.tables, m)
    assert np.array_equal(sym, grid.symbols) and np.array_equal(sym_ref, grid.symbols)
    assert np.array_equal(esc, esc_ref)

    fields, payload = grid_rans.encode(grid, lanes)
    out = _decode(fields, payload, w.shape, dtype)
    assert out.dtype == w.dtype and out.tobytes() == grid.decoded.tobytes()
    # the outliers are exact; every other value is its row's step times an integer
    escaped = grid.symbols == fields["symbols"]
    assert np.array_equal(out[escaped], w[escaped])
    row_steps = grid.steps.astype(np.float64)[grid.step_of][:, None]
    q = np.rint(as_float64(out, dtype) / row_steps)
    if dtype in ("float32", "float64"):
        on_grid = from_float32((q * row_steps).astype(np.float32), dtype)
        assert np.array_equal(on_grid[~escaped], out[~escaped])


def test_a_value_is_one_rounding_of_the_exact_product():
    """FORMAT 4.6.3: RN32((q_lo + s) * step), the product exact in binary64."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 50)).astype(np.float32)
    grid = grid_fit.fit_grid(w, "float32", np.full(3, 0.0123))
    step = float(grid.steps[0])
    q = grid.symbols.astype(np.int64) + grid.q_lo
    want = np.array([np.float32(float(k) * step) for k in q.ravel()]).reshape(q.shape)
    assert grid.decoded.tobytes() == want.tobytes()


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(0, 10**6), min_size=1, max_size=300))
def test_normalized_tables_sum_to_the_total_and_keep_every_used_symbol(counts):
    c = np.array(counts)
    f = static_rans.normalize(c)[0].astype(np.int64)
    assert f.sum() == static_rans.TABLE_ONE
    assert ((f > 0) == (c > 0)).all() or c.sum() == 0


def test_alphabets_are_as_short_as_the_values_and_escape_the_far_ones():
    q = np.array([[0, 1, -1, 2, 5000, -3]])
    lo, a = grid_fit.alphabet(q, width=16)
    assert (lo, a) == (-3, 6)
    assert grid_fit.alphabet(np.array([[0, 3]]), width=16) == (0, 4)


# ---------------------------------------------------------------- hostile payloads


def _coded(seed: int = 0) -> tuple[dict, bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = _matrix(rng, 6, 40, "float32")
    grid = grid_fit.fit_grid(w, "float32", np.full(6, 0.05), max_tables=4)
    fields, payload = grid_rans.encode(grid, 3)
    return fields, payload, w


def test_damaged_grid_payloads_are_refused_not_crashed_on():
    fields, payload, w = _coded()
    side = fields["side"]
    cases = [
        ({**fields, "side": len(payload) + 1}, payload),
        ({**fields, "side": side - 1}, payload),
        ({**fields, "tables": fields["tables"] + 1}, payload),
        ({**fields, "contexts": fields["contexts"] + 1}, payload),
        ({**fields, "outliers": fields["outliers"] + 1}, payload),
        ({**fields, "symbols": fields["symbols"] + 1}, payload),
        (fields, payload[:-4]),
        (fields, payload[:side] + bytes(8) + payload[side + 8 :]),  # a lane state of 0
    ]
    for i, (f, p) in enumerate(cases):
        with pytest.raises((FormatError, IntegrityError)):
            _decode(f, p, w.shape, "float32")
        assert i >= 0
    for bad in ({"steps": 0}, {"tables": 0}, {"q_lo": 2**24}, {"lanes": 7}, {"symbols": 0},
                {"outliers": -1}, {"side": -1}, {"steps": "x"}, {"contexts": 0}, {"contexts": 11},
                {"contexts": 2}):  # fmt: skip
        with pytest.raises(FormatError):
            _decode({**fields, **bad}, payload, w.shape, "float32")


def _with_lane_escapes(fields: dict, payload: bytes, counts: list[int]) -> tuple[bytes, int]:
    """(``payload`` with its side frame's per-lane escape counts replaced by ``counts``,
    the new side frame's length)."""
    side = zstandard.ZstdDecompressor().decompress(payload[: fields["side"]])
    n_esc = 4 * len(counts)
    at = len(side) - 4 * fields["outliers"] - n_esc  # the escapes sit before the outliers
    edited = side[:at] + np.asarray(counts, "<u4").tobytes() + side[at + n_esc :]
    frame = zstandard.ZstdCompressor().compress(edited)
    return frame + payload[fields["side"] :], len(frame)


@pytest.mark.parametrize("pure", ["0", "1"])
def test_escape_counts_that_do_not_match_the_outliers_are_refused(pure, monkeypatch):
    monkeypatch.setenv("PERMCODEC_PURE_NUMPY", pure)
    rng = np.random.default_rng(3)
    w = _matrix(rng, 6, 40, "float32")
    w[0, 3], w[4, 7] = 1e4, -1e4  # beyond the alphabet: outliers
    grid = grid_fit.fit_grid(w, "float32", np.full(6, 0.05), max_tables=4)
    fields, payload = grid_rans.encode(grid, 3)
    np.testing.assert_array_equal(_decode(fields, payload, w.shape, "float32"), grid.decoded)
    lane_of = np.repeat(np.arange(3), 2)  # 6 rows in 3 lanes
    true = np.bincount(lane_of[np.nonzero(grid.symbols == grid.symbols.max())[0]], minlength=3)
    assert true.sum() == fields["outliers"] >= 2
    first = int(np.argmax(true > 0))
    moved = true.copy()
    moved[first] -= 1
    moved[(first + 1) % 3] += 1
    for counts in (moved, true + np.array([1, 0, 0]), np.zeros(3, int)):  # moved; not the total
        bad, side = _with_lane_escapes(fields, payload, list(counts))
        with pytest.raises(FormatError, match="escapes do not match the outliers"):
            _decode({**fields, "side": side}, bad, w.shape, "float32")


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_flipped_words_fail_or_decode_alike_in_both_decoders(data, monkeypatch):
    fields, payload, w = _coded(data.draw(st.integers(0, 50)))
    side = fields["side"]
    pos = data.draw(st.integers(side, len(payload) - 1))
    bad = bytearray(payload)
    bad[pos] ^= 1 << data.draw(st.integers(0, 7))
    results = []
    for pure in ("0", "1"):
        monkeypatch.setenv("PERMCODEC_PURE_NUMPY", pure)
        try:
            results.append(_decode(fields, bytes(bad), w.shape, "float32").tobytes())
        except (FormatError, IntegrityError) as e:
            results.append(type(e).__name__ + str(e))
    assert results[0] == results[1]


# ---------------------------------------------------------------- rate and error targets


def _model_items(seed: int = 0) -> list[tuple[str, np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    return [
        ("conv.weight", (rng.standard_normal((32, 8, 3, 3)) * 0.2).astype(np.float32), "float32"),
        ("conv.bias", rng.standard_normal(32).astype(np.float32), "float32"),
        ("bn.weight", rng.uniform(0.1, 2, 32).astype(np.float32), "float32"),
        ("bn.running_var", rng.uniform(0.5, 2, 32).astype(np.float32), "float32"),
        ("bn.num_batches_tracked", np.array(7, dtype=np.int64), "int64"),
        ("fc.weight", (rng.standard_normal((10, 800)) * 0.05).astype(np.float16), "float16"),
        ("mask", np.tril(np.ones((40, 40), np.float32)), "float32"),
        ("tiny.weight", rng.standard_normal((4, 4)).astype(np.float32), "float32"),
    ]


@pytest.mark.parametrize("bpw", [1.0, 2.5, 6.0])
def test_a_rate_is_met_with_the_container_and_the_rest_stays_exact(bpw):
    items = _model_items()
    buf = io.BytesIO()
    errors = posthoc.write_trained(buf, items, {}, bpw=bpw)
    assert set(errors) == {"conv.weight", "fc.weight"}
    with PermFile(buf.getvalue()) as pf:
        split = pf.size_split()
        assert split["bits_per_weight"] <= bpw
        assert split["bits_per_weight"] >= 0.85 * bpw  # the rate is used, not wasted
        for name, array, _ in items:
            if name not in errors:  # biases, norms, the mask, the tiny matrix: exact
                assert pf.storage(name).tobytes() == array.tobytes(), name
        assert pf.version == 6


def test_coarser_rates_lose_more():
    errs = [posthoc.write_trained(io.BytesIO(), _model_items(), {}, bpw=r) for r in (1, 2, 4, 8)]
    for name in ("conv.weight", "fc.weight"):
        assert [e[name] for e in errs] == sorted((e[name] for e in errs), reverse=True)


@pytest.mark.parametrize("max_error", [0.1, 0.01, 1e-3])
def test_every_matrix_stays_within_the_error_asked(max_error):
    buf = io.BytesIO()
    errors = posthoc.write_trained(buf, _model_items(1), {}, max_error=max_error)
    assert errors and all(0 < e <= max_error for e in errors.values())
    assert all(e > max_error / 3 for e in errors.values())  # and not far within it
    with PermFile(buf.getvalue()) as pf:
        assert {t["name"]: t["rel_error"] for t in pf.info()["tensors"] if "rel_error" in t} == (
            pytest.approx(errors)
        )


def test_too_few_bits_is_one_clear_error():
    with pytest.raises(permcodec.PermcodecError, match="too few"):
        posthoc.write_trained(io.BytesIO(), _model_items(), {}, bpw=0.01)


def test_every_weight_counts_alike_without_data_and_unmeasurable_matrices_take_the_median():
    items = _model_items()
    names = posthoc.grid_candidates(items)
    plain = posthoc.matrices(items, names)
    assert all((m.importance == 1.0).all() for m in plain)
    measured = {"conv.weight": np.full(32, np.nan), "fc.weight": np.full(10, 3.0)}
    mats = {m.name: m for m in posthoc.matrices(items, names, measured)}
    assert (mats["conv.weight"].importance == 3.0).all()


def test_rows_that_matter_more_get_finer_steps():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 400)).astype(np.float32)
    importance = np.array([1.0] * 4 + [100.0] * 4)
    grids = posthoc.grids_for_rate([("w", w, "float32")], 3.0, {"w": importance})
    g = grids["w"]
    steps = g.steps.astype(np.float64)[g.step_of]
    assert steps[4:].max() < steps[:4].min()


# ---------------------------------------------------------------- the API and the CLI


def test_saving_a_model_without_a_plan_needs_a_choice(tmp_path):
    torch = pytest.importorskip("torch")

    def mlp():
        return torch.nn.Sequential(
            torch.nn.Linear(256, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)
        )

    model = mlp()
    with pytest.raises(permcodec.PlanError, match="bpw=R"):
        permcodec.save(model, tmp_path / "a.perm")
    assert not (tmp_path / "a.perm").exists()
    errors = permcodec.save(model, tmp_path / "b.perm", bpw=4.0)
    assert set(errors) == {"0.weight", "2.weight"}
    loaded = mlp()
    permcodec.load(tmp_path / "b.perm", model=loaded)
    assert torch.equal(loaded[0].bias, model[0].bias)  # biases exact
    assert permcodec.save(model, tmp_path / "c.perm", lossless=True) == {}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in permcodec.load(
        tmp_path / "c.perm").items())  # fmt: skip
    with pytest.raises(permcodec.PlanError, match="retired"):
        permcodec.save(model, tmp_path / "d.perm", approximate=True)
    with pytest.raises(permcodec.PlanError, match="rank buckets"):
        permcodec.save(model, tmp_path / "d.perm", bits=2)


def test_calibration_steers_the_steps_to_the_rows_the_outputs_use(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 48), torch.nn.ReLU(), torch.nn.Linear(48, 8))
    with torch.no_grad():
        model[2].weight[:, 24:] = 0.0  # the second half of the hidden units is never read
    batches = [torch.randn(32, 256) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LossyWarning)
        permcodec.save(model, tmp_path / "c.perm", bpw=3.0, calibration=batches)
    with PermFile(tmp_path / "c.perm") as pf:
        assert pf.size_split()["bits_per_weight"] <= 3.0
        w = pf.storage("0.weight").astype(np.float64)
    ref = model[0].weight.detach().numpy().astype(np.float64)
    used = np.linalg.norm(w[:24] - ref[:24]) / np.linalg.norm(ref[:24])
    unused = np.linalg.norm(w[24:] - ref[24:]) / np.linalg.norm(ref[24:])
    assert used < unused / 2
    with pytest.raises(permcodec.PlanError, match="pass the model"):
        permcodec.save(model.state_dict(), tmp_path / "d.perm", bpw=3.0, calibration=batches)


def test_rows_of_a_lookup_table_calibration_never_met_keep_the_tables_mean_importance():
    torch = pytest.importorskip("torch")
    from permcodec.torch.calibrate import row_importance

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(100, 16), torch.nn.Linear(16, 4))
    batches = [torch.randint(0, 10, (8, 5)) for _ in range(3)]  # tokens 0..9 only
    imp = row_importance(model, batches, ["0.weight", "1.weight"])
    table, dense = imp["0.weight"], imp["1.weight"]
    # the rows never looked up count as the table's mean (of the measured rows: the met
    # rows' sum over all rows), not as 0.1x of it as rows of other matrices may
    np.testing.assert_allclose(table[10:], table[:10].sum() / 100, rtol=1e-9)
    assert table[:10].max() > table[10:].max()  # the rows met count for more
    assert dense.min() >= 0.1 * dense.mean() * (1 - 1e-9)


def test_model_files_of_every_kind_are_read_or_refused_in_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    from click.testing import CliRunner

    from permcodec.cli.main import main

    def cli(*args):
        r = CliRunner().invoke(main, [str(a) for a in args])
        return r.exit_code, r.stdout, r.stderr

    sd = {"fc.weight": torch.randn(40, 50), "fc.bias": torch.randn(40)}
    st.save_file(sd, tmp_path / "m.safetensors")
    np.savez(tmp_path / "m.npz", **{k: v.numpy() for k, v in sd.items()})
    torch.save({"step": 3, "model_state": sd, "optimizer_state": {}}, tmp_path / "ckpt.pt")
    torch.save({"a": sd, "b": sd}, tmp_path / "two.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), tmp_path / "ts.pt")
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07onnx")
    (tmp_path / "notes.txt").write_text("hello")
    for src in ("m.safetensors", "m.npz", "ckpt.pt"):
        code, _out, err = cli("encode", tmp_path / src, "--bpw", 6, "-o", tmp_path / f"{src}.perm")
        assert code == 0, err
        got = permcodec.load(tmp_path / f"{src}.perm")
        assert torch.equal(got["fc.bias"], sd["fc.bias"]) and "fc.weight" in got
    code, _, err = cli("encode", tmp_path / "two.pt", "-o", tmp_path / "t.perm")
    assert code == 1 and "'a', 'b'" in err and "--key" in err
    assert cli("encode", tmp_path / "two.pt", "--key", "b", "-o", tmp_path / "t.perm")[0] == 0
    for src, code_want, words in [
        ("ts.pt", 3, "TorchScript"),
        ("m.onnx", 3, "ONNX"),
        ("notes.txt", 3, "not a torch checkpoint"),
    ]:
        code, _, err = cli("encode", tmp_path / src, "-o", tmp_path / "x.perm")
        assert code == code_want and words in err and len(err.strip().splitlines()) == 1, err


def test_a_file_claims_the_memory_its_grids_decode_in():
    items = _model_items()
    buf = io.BytesIO()
    grids = posthoc.choose_grids(items, bpw=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LossyWarning)
        write_file(buf, items, None, {}, grids=grids)
    with PermFile(buf.getvalue()) as pf:
        entries = [pf.entry(n) for n in pf]
    out = sum(e.nbytes for e in entries)
    largest = max(a.size for n, a, _ in items if n in grids)
    assert out + 2 * largest < decode_bytes(entries) <= out + 2 * largest + 16 * 2**16 + 2**14


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_the_values_kernel_is_the_reference(data, monkeypatch):
    rows, m = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 50))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a = data.draw(st.integers(1, 3000))
    sym = rng.integers(0, a + 1, (rows, m)).astype(np.uint16)
    steps = rng.uniform(1e-6, 10.0, rows).astype(np.float32).astype(np.float64)
    q_lo = data.draw(st.integers(-(2**23), 2**23 - a))
    dtype = data.draw(st.sampled_from(DTYPES))
    got = grid_rans.grid_values(sym, steps, q_lo, a, dtype)
    monkeypatch.setenv("PERMCODEC_PURE_NUMPY", "1")
    assert got.tobytes() == grid_rans.grid_values(sym, steps, q_lo, a, dtype).tobytes()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_the_compiled_encoder_writes_the_reference_bytes(data, monkeypatch):
    rows, m = data.draw(st.integers(1, 24)), data.draw(st.integers(1, 60))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    dtype = data.draw(st.sampled_from(DTYPES))
    w = _matrix(rng, rows, m, dtype)
    steps = np.exp2(rng.uniform(-9, 2, rows))  # from escapes to all-zero rows
    if data.draw(st.booleans()):
        w.reshape(rows, m)[0, 0] = from_float32(np.float32(0.5) * np.float32(steps[0]), dtype)
    tables, lanes = data.draw(st.integers(1, 16)), data.draw(st.integers(1, rows))
    coded = []
    for pure in ("0", "1"):
        monkeypatch.setenv("PERMCODEC_PURE_NUMPY", pure)
        grid = grid_fit.fit_grid(w, dtype, steps, max_tables=tables)
        fields, payload = grid_rans.encode(grid, lanes)
        coded.append((fields, payload, grid.decoded.tobytes(), grid.outliers.tobytes()))
    assert coded[0] == coded[1]


def test_error_feedback_moves_the_outputs_less_than_rounding_to_nearest():
    rng = np.random.default_rng(5)
    rows, m = 16, 300
    # correlated inputs (a smooth signal, as audio or image patches are)
    x = np.cumsum(rng.standard_normal((2000, m)), axis=1) / np.sqrt(np.arange(1, m + 1))
    w = (rng.standard_normal((rows, m)) * 0.1).astype(np.float32)
    h = x.T @ x / len(x)
    steps = np.full(rows, 0.05)
    plain = grid_fit.fit_grid(w, "float32", steps)
    factors = grid_fit.feedback_factors([(0, h[:128, :128]), (128, h[128:, 128:])])
    fed = grid_fit.fit_grid(w, "float32", steps, factors=factors)

    def out_err(g):
        return np.linalg.norm((g.decoded.astype(np.float64) - w) @ x.T)

    assert out_err(fed) < 0.7 * out_err(plain)
    fields, payload = grid_rans.encode(fed, 4)
    assert _decode(fields, payload, w.shape, "float32").tobytes() == fed.decoded.tobytes()


def test_the_format_appendix_example_decodes_as_written():
    """FORMAT.md B.4: the side frame, the state and the values of the worked example."""
    import zstandard

    sym = np.array([[2, 3, 1, 2], [2, 4, 2, 5]], dtype=np.uint16)
    ctx_of = static_rans.symbol_contexts(-2, 5, 3)
    assert ctx_of.tolist() == [0, 0, 1, 2, 2, 2]
    freqs = np.array(
        [[0, 0, 32768, 0, 0, 0], [0, 0, 0, 10922, 10923, 10923], [0, 16384, 16384, 0, 0, 0]],
        dtype=np.uint16,
    )
    tables = static_rans.Tables(freqs, np.zeros(2, np.uint8), ctx_of, 3)
    states, lengths, words = static_rans.encode(sym, tables, 1)
    assert states.tolist() == [231929249836] and lengths.tolist() == [0] and words.size == 0
    steps = np.array([0.25, 0.5], np.float32)
    values = grid_rans.grid_values(sym, steps.astype(np.float64)[[0, 1]], -2, 5, "float32")
    values[sym == 5] = np.float32(3.14159)
    bits = ["00000000", "3e800000", "be800000", "00000000"]
    bits += ["00000000", "3f800000", "00000000", "40490fd0"]
    assert [f"{b:08x}" for b in values.view(np.uint32).ravel()] == bits
    grid = grid_rans.Grid(sym, np.array([0, 1]), steps, tables, -2, values[sym == 5], values)
    fields, payload = grid_rans.encode(grid, 1)
    side = "0000803e0000003f00010000000000000080000000000000000000000000aa2aab2aab2a"
    side += "00000040004000000000000001000000d00f4940"
    assert zstandard.ZstdDecompressor().decompress(payload[: fields["side"]]).hex() == side
    assert _decode(fields, payload, (2, 4), "float32").tobytes() == values.tobytes()


def test_a_rate_is_met_even_when_the_estimates_mislead(monkeypatch):
    """Error feedback at very low rates moves sizes away from what plain rounding of a
    sample predicts; the search then bisects on measured fits."""
    from permcodec.coding import grid_rate

    real = grid_rate.estimate_bits
    monkeypatch.setattr(grid_rate, "estimate_bits", lambda m, s: 0.01 * real(m, s))
    buf = io.BytesIO()
    posthoc.write_trained(buf, _model_items(), {}, bpw=2.0)
    with PermFile(buf.getvalue()) as pf:
        assert 1.5 < pf.size_split()["bits_per_weight"] <= 2.0


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 12),
    m=st.integers(1, 80),
    levels=st.integers(1, 8),
    seed=st.integers(0, 1000),
)
def test_a_quantized_matrix_is_stored_exactly_on_its_own_steps(
    tmp_path_factory, rows, m, levels, seed
):
    """What quantization-aware training leaves (integers times a step per row) goes on a
    grid of exactly those steps, unsnapped, and decodes bit for bit; values off the
    grid are refused rather than stored lossily."""
    rng = np.random.default_rng(seed)
    steps = rng.uniform(1e-3, 0.5, rows).astype(np.float16).astype(np.float32)
    q = rng.integers(-levels, levels + 1, (rows, m)).astype(np.float32)
    w = (q * steps[:, None]) + np.float32(0.0)
    grid = grid_fit.exact_grid(w, "float32", steps)
    assert grid.decoded.tobytes() == w.tobytes()
    path = tmp_path_factory.mktemp("q") / "q.perm"
    posthoc.write_grids(path, [("w", w, "float32")], None, {"w": grid})
    assert permcodec.load_numpy(path)["w"].tobytes() == w.tobytes()
    off = w.copy()
    off[0, 0] += np.float32(steps[0] / 3)
    with pytest.raises(ValueError, match="not on the grid"):
        grid_fit.exact_grid(off, "float32", steps)
