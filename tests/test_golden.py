"""Golden files: `.perm` files written by an earlier release decode bit for bit, and the
current writer gives the same bytes for the same inputs.

tests/golden holds files of formats 1 to 4 written by permcodec 0.4.0, one of format 5
(``levels`` rows, permcodec 0.5), one of format 6 (``grid-rans``, permcodec 0.6) and one
of format 7 (``level-rans``, permcodec 0.7; see tests/golden/make_golden.py): every coding, dtype and initializer kind. A change that
alters what an old file decodes to, or what the writer produces, fails here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import permcodec
from permcodec import LossyWarning, Plan
from permcodec import numpy as pnp

GOLDEN = Path(__file__).parent / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
FILES = sorted(k for k in MANIFEST if k.endswith(".perm"))


def _expected(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / MANIFEST[name]["expected"]) as z:
        return {k: z[k] for k in MANIFEST[name]["tensors"]}


def _bits_of(a: np.ndarray) -> bytes:
    """The stored bytes of an array (bfloat16 as its uint16 patterns)."""
    return np.ascontiguousarray(a).tobytes()


def test_the_golden_set_covers_every_coding_dtype_and_version():
    codings = {t["coding"] for f in FILES for t in MANIFEST[f]["tensors"].values()}
    dtypes = {t["dtype"] for f in FILES for t in MANIFEST[f]["tensors"].values()}
    assert codings == {
        "perm-rans", "row-rans", "bucket-rans", "grid-rans", "level-rans", "raw", "raw-zstd"
    }  # fmt: skip
    assert {"float32", "float16", "bfloat16", "float64", "int64", "bool", "uint8"} <= dtypes
    assert {int(f[1]) for f in FILES} == {1, 2, 3, 4, 5, 6, 7}
    kinds = {
        t["spec"]["kind"]
        for f in FILES
        for t in MANIFEST[f].get("plan", {}).get("tensors", {}).values()
    }
    assert {"quantile", "levels"} <= kinds


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("reference", [False, True], ids=["kernels", "numpy-reference"])
def test_golden_files_decode_bit_for_bit(name, reference, monkeypatch):
    if reference:
        monkeypatch.setenv("PERMCODEC_PURE_NUMPY", "1")
    want = _expected(name)
    with permcodec.open(GOLDEN / name) as f:
        assert f.keys() == list(MANIFEST[name]["tensors"])
        assert f.version == int(name[1])
        for key in f:
            got = f.tensor(key)
            assert got.shape == want[key].shape and _bits_of(got) == _bits_of(want[key]), key
    arrays = permcodec.load_numpy(GOLDEN / name)
    assert {k: _bits_of(a) for k, a in arrays.items()} == {k: _bits_of(a) for k, a in want.items()}


@pytest.mark.parametrize("name", FILES)
def test_golden_files_load_into_torch_bit_for_bit(name):
    torch = pytest.importorskip("torch")
    want = _expected(name)
    state = permcodec.load(GOLDEN / name)
    for key, t in state.items():
        got = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        assert _bits_of(got.numpy()) == _bits_of(want[key]), key


def _user_arrays(path: Path, bf16: set[str]) -> dict[str, np.ndarray]:
    """The inputs as a numpy user holds them (bfloat16 as ml_dtypes.bfloat16)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with np.load(path) as z:
        return {k: z[k].view(ml_dtypes.bfloat16) if k in bf16 else z[k] for k in z.files}


@pytest.mark.parametrize("name", ["v4_exact.perm", "v4_lossy.perm", "v7_levels.perm"])
def test_the_writer_gives_the_golden_bytes_for_the_same_inputs(name, tmp_path):
    case = MANIFEST[name]
    bf16 = {k for k, t in case["tensors"].items() if t["dtype"] == "bfloat16"}
    arrays = _user_arrays(GOLDEN / f"inputs_{case['inputs']}.npz", bf16)
    out = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LossyWarning)
        pnp.save(
            arrays,
            out,
            Plan.from_dict(case["plan"]),
            case["metadata"],
            bits=case.get("tensor_bits"),
        )
    assert out.read_bytes() == (GOLDEN / name).read_bytes()


def test_the_writer_gives_the_golden_bytes_for_the_same_grids(tmp_path):
    """The grid-rans writer (container, side frame, static rANS) pinned: the grids' parts
    as make_golden.py fitted them give the file's bytes again."""
    from permcodec.coding import static_rans
    from permcodec.coding.grid_rans import Grid
    from permcodec.format.posthoc import write_grids

    case = MANIFEST["v6_grid.perm"]
    with np.load(GOLDEN / "inputs_grid.npz") as z:
        parts = {k: z[k] for k in z.files}
    items = [(n, parts[f"{n}/array"], dt) for n, dt in case["items"]]
    grids = {}
    for name in {k.split("/")[0] for k in parts if k.endswith("/symbols")}:
        p = {k.split("/")[1]: v for k, v in parts.items() if k.startswith(name + "/")}
        tables = static_rans.Tables(p["freqs"], p["table_of"], p["ctx_of"], int(p["contexts"]))
        grids[name] = Grid(p["symbols"], p["step_of"], p["steps"], tables, int(p["q_lo"]),
                           p["outliers"], p["decoded"])  # fmt: skip
    write_grids(tmp_path / "g.perm", items, case["metadata"], grids)
    assert (tmp_path / "g.perm").read_bytes() == (GOLDEN / "v6_grid.perm").read_bytes()
