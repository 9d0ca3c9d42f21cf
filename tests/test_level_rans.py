"""``level-rans``: a levels tensor's arrangement coded with a table per initial class,
decoded bit for bit by the C decoder and the numpy reference, smaller than the multiset
codings on what training writes, and refused when it is damaged or misplaced."""

from __future__ import annotations

import numpy as np
import pytest
from hostile_files import edit_entry, reseal, seal, shuffled_rows, split
from hypothesis import given, settings
from hypothesis import strategies as st

import permcodec
from permcodec import FormatError, InitSpec, IntegrityError, Plan
from permcodec import numpy as pnp
from permcodec.coding import level_rans
from permcodec.core.dtypes import order_keys
from permcodec.core.initializers import initial_rows
from permcodec.format.container import section_digest
from permcodec.format.reader import decode_tensor

DTYPES = ["float32", "float16", "bfloat16", "float64"]


def _levels_file(
    path, shape, dtype="float32", levels=1, density=0.3, noise=0.5, seed=0
) -> tuple[np.ndarray, Plan]:
    """A file of one levels tensor rearranged near its init (``noise`` None: at random)."""
    plan = Plan(seed)
    tp = plan.add("w", InitSpec("levels", levels=levels, scale=0.1, density=density), shape)
    init = initial_rows(tp.spec, tp.key, shape, dtype)
    rng = np.random.default_rng(seed)
    rows = shuffled_rows(init, seed) if noise is None else _moved(init, rng, noise)
    array = rows.reshape(shape)
    if dtype == "bfloat16":
        array = array.view(pytest.importorskip("ml_dtypes").bfloat16)
    pnp.save({"w": array}, path, plan)
    return rows.reshape(shape), plan


def _moved(init: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Each row rearranged as training by permutation moves it: the values placed in the
    order of a latent copy, the init plus noise of ``noise`` (scale 0.1) standard
    deviation, so most stay at their level and some move to a neighbouring one."""
    latent = init.astype(np.float64) + rng.normal(0, noise * 0.1, init.shape)
    out = np.empty_like(init)
    np.put_along_axis(out, np.argsort(latent, axis=1, kind="stable"), np.sort(init, axis=1), 1)
    return out


def _decoded_bits(path, monkeypatch, reference: bool, threads: int = 1) -> bytes:
    monkeypatch.setenv("PERMCODEC_PURE_NUMPY", "1" if reference else "0")
    monkeypatch.setenv("PERMCODEC_THREADS", str(threads))
    with permcodec.open(path) as f:
        return np.ascontiguousarray(f.tensor("w")).tobytes()


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 40),
    m=st.integers(1, 300),
    dtype=st.sampled_from(DTYPES),
    levels=st.integers(1, 5),
    density=st.sampled_from([0.05, 0.3, 0.5, 1.0]),
    noise=st.sampled_from([None, 0.1, 0.5]),
    seed=st.integers(0, 1000),
)
def test_round_trips_bit_for_bit_in_c_and_numpy(
    tmp_path_factory, rows, m, dtype, levels, density, noise, seed
):
    """Whatever the levels, density, dtype and shape, both decoders give the input."""
    path = tmp_path_factory.mktemp("lv") / "w.perm"
    want, plan = _levels_file(path, (rows, m), dtype, levels, density, noise, seed)
    header = split(path.read_bytes())[0]
    entry = header["tensors"][0]
    # small tensors may be coded as multisets; force level-rans to test it everywhere
    spec, key = plan.tensors["w"].spec, plan.tensors["w"].key
    init = initial_rows(spec, key, (rows, m), dtype)
    cls, init_cls, classes = _classes(want.reshape(rows, m), init, dtype, spec)
    fields, payload = level_rans.encode(cls, init_cls, classes, 0.0)
    entry = _entry(entry, fields, payload)
    for reference in (False, True):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PERMCODEC_PURE_NUMPY", "1" if reference else "0")
            got = decode_tensor(entry, payload)
        assert got.tobytes() == np.ascontiguousarray(want).tobytes()


def _entry(entry: dict, fields: dict, payload: bytes) -> dict:
    """``entry`` recoded as ``fields`` with ``payload``."""
    return dict(entry, **fields, length=len(payload), payload_digest=section_digest(payload))


def _classes(trained: np.ndarray, init: np.ndarray, dtype: str, spec: dict):
    """Trained and initial classes of each position, and how many classes a row has."""
    values, _ = level_rans.level_classes(spec, dtype, init.shape[1])
    keys = order_keys(values.reshape(1, -1), dtype)[0]
    cls = np.searchsorted(keys, order_keys(trained, dtype))
    init_cls = np.searchsorted(keys, order_keys(init, dtype))
    return cls, init_cls, len(values)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_writer_codes_large_levels_tensors_smaller_than_the_multiset_codings(
    tmp_path, monkeypatch, dtype
):
    """What rate-controlled training writes (rows near their init) gets level-rans, and
    it is smaller than bucket-rans, the multiset coding the writer chose before."""
    path = tmp_path / "w.perm"
    want, plan = _levels_file(path, (64, 1100), dtype, levels=1, density=0.2)
    with permcodec.open(path) as f:
        assert f.version == 7
        assert f.entry("w").fields["coding"] == "level-rans"
        level_bytes = f.entry("w").length
    from permcodec.coding.arrangement import bound_bits, init_classes
    from permcodec.coding.encoder import _encode_multiset

    spec, key = plan.tensors["w"].spec, plan.tensors["w"].key
    init = initial_rows(spec, key, want.shape, dtype)
    rc, init_cls = init_classes(init, order_keys(init, dtype))
    cls, _, _ = _classes(want, init, dtype, spec)
    _, multiset = _encode_multiset(cls, rc, init_cls, bound_bits(rc.counts))
    assert level_bytes < 0.97 * len(multiset)
    for reference in (False, True):
        assert _decoded_bits(path, monkeypatch, reference) == want.tobytes()
    assert _decoded_bits(path, monkeypatch, False, threads=2) == want.tobytes()


def test_every_lane_count_decodes(tmp_path, monkeypatch):
    """Lanes in groups of four or not, and a last group cut short, decode alike (the
    numpy reference also in groups of two lanes)."""
    path = tmp_path / "w.perm"
    want, plan = _levels_file(path, (23, 90), levels=2, density=0.5)
    header = split(path.read_bytes())[0]
    spec, key = plan.tensors["w"].spec, plan.tensors["w"].key
    init = initial_rows(spec, key, want.shape, "float32")
    cls, init_cls, classes = _classes(want, init, "float32", spec)
    for lanes in (1, 3, 4, 5, 8, 9, 23):
        monkeypatch.setattr(level_rans, "choose_lanes", lambda rows, m, n=lanes: n)
        fields, payload = level_rans.encode(cls, init_cls, classes, 0.0)
        entry = _entry(header["tensors"][0], fields, payload)
        for reference, group_values in (("0", None), ("1", None), ("1", 200)):
            monkeypatch.setenv("PERMCODEC_PURE_NUMPY", reference)
            if group_values:  # the reference two lanes at a time
                monkeypatch.setattr(level_rans, "REF_VALUES", group_values)
            assert decode_tensor(entry, payload).tobytes() == want.tobytes(), (lanes, reference)


def _level_file(tmp_path) -> tuple[bytes, np.ndarray]:
    path = tmp_path / "w.perm"
    want, _ = _levels_file(path, (64, 1100), levels=1, density=0.2)
    raw = path.read_bytes()
    assert split(raw)[0]["tensors"][0]["coding"] == "level-rans"
    return raw, want


def _open_tensor(raw: bytes, tmp_path, reference: bool, monkeypatch) -> np.ndarray:
    monkeypatch.setenv("PERMCODEC_PURE_NUMPY", "1" if reference else "0")
    (tmp_path / "bad.perm").write_bytes(raw)
    with permcodec.open(tmp_path / "bad.perm") as f:
        return f.tensor("w")


def _edit_payload(raw: bytes, edit) -> bytes:
    return reseal(raw, payload_edit=lambda payloads: [edit(payloads[0])])


@pytest.mark.parametrize("reference", [False, True], ids=["c", "numpy"])
def test_damaged_tables_and_streams_are_refused(tmp_path, monkeypatch, reference):
    raw, _ = _level_file(tmp_path)

    def table(p: bytes) -> bytes:  # table 0 no longer sums to 4096
        return (int.from_bytes(p[0:2], "little") + 1).to_bytes(2, "little") + p[2:]

    with pytest.raises(FormatError, match="does not sum to 4096"):
        _open_tensor(_edit_payload(raw, table), tmp_path, reference, monkeypatch)

    def word(p: bytes) -> bytes:  # a word of the stream changed
        return p[:-40] + bytes([p[-40] ^ 0x5A]) + p[-39:]

    with pytest.raises(IntegrityError):
        _open_tensor(_edit_payload(raw, word), tmp_path, reference, monkeypatch)
    with pytest.raises(FormatError):  # the segments no longer add up to the payload
        _open_tensor(_edit_payload(raw, lambda p: p[:-4]), tmp_path, reference, monkeypatch)


def test_a_stream_that_is_not_an_arrangement_is_refused(tmp_path, monkeypatch):
    """A payload that decodes consistently but to a row of the wrong multiset: the
    tensor would not be an arrangement of its init, so it is damaged."""
    raw, want = _level_file(tmp_path)
    entry = split(raw)[0]["tensors"][0]
    spec, key = entry["spec"], tuple(entry["key"])
    init = initial_rows(spec, key, want.shape, "float32")
    cls, init_cls, classes = _classes(want, init, "float32", spec)
    cls[5, 0] = (cls[5, 0] + 1) % classes  # one value swapped for another
    _, payload = level_rans.encode(cls, init_cls, classes, 0.0)
    bad = _edit_payload(raw, lambda p: payload)
    for reference in (False, True):
        with pytest.raises(IntegrityError, match="row 5 is not an arrangement"):
            _open_tensor(bad, tmp_path, reference, monkeypatch)


def test_level_rans_is_refused_where_it_cannot_be(tmp_path):
    """Only format 7 holds level-rans, and only on a levels spec."""
    raw, _ = _level_file(tmp_path)
    header, payloads, _ = split(raw)
    (tmp_path / "v6.perm").write_bytes(seal(header, payloads, version=6))
    with pytest.raises(FormatError, match="level-rans"):
        permcodec.open(tmp_path / "v6.perm")
    spec = header["tensors"][0]["spec"]
    uniform = {
        "kind": "uniform",
        "version": 1,
        "a": -0.1,
        "b": 0.1,
        **{k: spec[k] for k in ("density", "granularity", "fan_in", "fan_out")},
    }
    (tmp_path / "u.perm").write_bytes(edit_entry(raw, "w", spec=uniform))
    with (
        pytest.raises(FormatError, match="needs a levels spec"),
        permcodec.open(tmp_path / "u.perm") as f,
    ):
        f.tensor("w")


def test_the_format_appendix_level_rans_example_decodes_as_written():
    """FORMAT.md B.6, read from the document: its payload bytes decode, in C and in
    numpy, to the tensor bits it states, and the writer makes those bytes."""
    import re
    from pathlib import Path

    from permcodec.core.initializers import resolve

    text = (Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text()
    b6 = text[text.index("### B.6") :]
    payload = bytes.fromhex(b6[b6.index("```") + 3 : b6.index("```", b6.index("```") + 3)])
    assert len(payload) == 74
    spec = resolve(InitSpec("levels", levels=2.0, scale=0.5, density=0.75), (2, 8))
    key = [0x1E043FC3, 0x47EB32AF]
    bits = re.search(r"float32 bits are\s+`([0-9a-f ]+)`\s+`([0-9a-f ]+)`", b6)
    want = np.array([int(b, 16) for b in f"{bits[1]} {bits[2]}".split()], np.uint32)
    entry = {"name": "w", "shape": [2, 8], "dtype": "float32", "spec": spec, "key": key,
             "coding": "level-rans", "lanes": 2, "length": len(payload), "offset": 0,
             "digest": section_digest(want.view(np.float32).reshape(2, 8)),
             "payload_digest": section_digest(payload)}  # fmt: skip
    for reference in ("0", "1"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PERMCODEC_PURE_NUMPY", reference)
            got = decode_tensor(entry, payload)
        assert got.view(np.uint32).ravel().tolist() == want.tolist()
    init = initial_rows(spec, tuple(key), (2, 8), "float32")
    cls, init_cls, classes = _classes(want.view(np.float32).reshape(2, 8), init, "float32", spec)
    assert level_rans.encode(cls, init_cls, classes, 0.0)[1] == payload


def test_rows_arranged_at_random_stay_within_what_rate_control_counts_on(tmp_path):
    """A --bpw file meets its target whatever training does: where level-rans would cost
    more than the multiset bound allows (no correlation with the init), the writer keeps
    a multiset coding."""
    from permcodec.coding.rate import payload_allowance

    path = tmp_path / "w.perm"
    _levels_file(path, (64, 1100), levels=1, density=0.3, noise=None)
    with permcodec.open(path) as f:
        entry = f.entry("w")
    assert 8 * entry.length <= payload_allowance(entry.fields["bound_bits"])
    assert entry.fields["coding"] != "level-rans"
