"""Write the golden `.perm` files of tests/golden (run once per format release).

The format 1-4 files were written by permcodec 0.4.0 before the package was reshaped
(issue 12), ``v5_levels.perm`` by permcodec 0.5 (the ``levels`` rows of rate control),
``v6_grid.perm`` by permcodec 0.6 (``grid-rans``: ``python make_golden.py v6`` writes
only it), ``v7_levels.perm`` by permcodec 0.7 (``level-rans``: ``python make_golden.py
v7``); tests/test_golden.py decodes each of them bit for bit and checks that the
current writer gives the same bytes for the same inputs. Running this script again
overwrites them with what the *current* code writes, which is only right when a new
format version is released on purpose.

Every coding (``perm-rans``, ``row-rans``, ``bucket-rans`` exact and lossy, ``raw``,
``raw-zstd``), every dtype, every initializer kind (the quantile kind included), a
sparse density, per-tensor granularity and the older layouts (format 1 to 3) are
covered, on tensors small enough to keep the folder small (about 80 KB).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from conftest import SPEC_CASES  # noqa: E402
from hostile_files import near_init, seal, shuffled_rows, split  # noqa: E402

from permcodec import InitSpec, LossyWarning, Plan  # noqa: E402
from permcodec.core.dtypes import from_float32, order_keys  # noqa: E402
from permcodec.core.initializers import generate, initial_rows  # noqa: E402
from permcodec.numpy import dtype_name  # noqa: E402
from permcodec.numpy import save as save_numpy  # noqa: E402

SEED = 20261129


def _seeded(plan: Plan, name: str, spec: InitSpec, shape: tuple[int, ...], dtype: str) -> Any:
    """The init of ``name`` in its storage dtype, shaped ``shape``."""
    tp = plan.add(name, spec, shape)
    return from_float32(generate(tp.spec, tp.key, shape), dtype)  # (rows, m)


def exact_case() -> tuple[dict[str, np.ndarray], Plan, dict[str, str]]:
    """Every spec kind and float dtype seeded and rearranged, plus raw tensors."""
    plan = Plan(SEED)
    rng = np.random.default_rng(SEED)
    tensors: dict[str, np.ndarray] = {}
    dtypes = ["float32", "float16", "bfloat16", "float64"]
    for i, (case_id, kind, params) in enumerate(SPEC_CASES):
        dtype = dtypes[i % 4]
        shape = (5, 3, 2, 2) if i % 3 == 0 else (6, 24)
        init = _seeded(plan, f"{case_id}.weight", InitSpec(kind, **params), shape, dtype)
        tensors[f"{case_id}.weight"] = shuffled_rows(init, i).reshape(shape)
    extra = {
        "sparse.weight": (InitSpec("he_normal", density=0.3), (8, 40), "float32"),
        "tensorwise.weight": (InitSpec("he_uniform", granularity="tensor"), (4, 10), "float16"),
        "quantile.weight": (
            InitSpec("quantile", knots=[-0.3, -0.1, 0.0, 0.05, 0.4]),
            (6, 32),
            "float32",
        ),
        "near.weight": (InitSpec("he_uniform"), (16, 64), "float32"),  # bucket-rans exact
    }
    for name, (spec, shape, dtype) in extra.items():
        init = _seeded(plan, name, spec, shape, dtype)
        arranged = near_init(init, rng, 0.02) if name == "near.weight" else shuffled_rows(init, 9)
        tensors[name] = arranged.reshape(shape)
    tensors.update(
        {
            "fc.bias": np.linspace(-1, 1, 6, dtype=np.float32),
            "zeros": np.zeros((64, 4), np.float32),
            "steps": np.arange(5, dtype=np.int64),
            "i32": np.arange(-3, 3, dtype=np.int32),
            "i16": np.arange(4, dtype=np.int16) * 1000,
            "i8": np.array([-128, 0, 127], np.int8),
            "u8": np.arange(7, dtype=np.uint8),
            "mask": np.array([True, False, True]),
            "scalar": np.array(3.5, np.float64),
            "empty": np.zeros((0, 5), np.float32),
            "half": np.arange(12, dtype=np.float16),
            "bfraw": np.arange(12, dtype=np.uint16) * 321,  # bfloat16 bits, stored raw
        }
    )
    return tensors, plan, {"note": "golden exact"}


def lossy_case() -> tuple[dict[str, np.ndarray], Plan, dict[str, int]]:
    """Rank buckets only, at 1, 2 and 3 bits, of rows near and far from their init."""
    plan = Plan(SEED + 1)
    rng = np.random.default_rng(SEED + 1)
    tensors = {}
    bits = {}
    for b, (name, spec, shape, dtype, near) in enumerate(
        [
            ("b1.weight", InitSpec("he_uniform"), (6, 40), "float32", True),
            ("b2.weight", InitSpec("he_normal", density=0.5), (4, 32), "float16", False),
            ("b3.weight", InitSpec("glorot_uniform"), (8, 64), "float32", True),
        ],
        start=1,
    ):
        init = _seeded(plan, name, spec, shape, dtype)
        tensors[name] = near_init(init, rng, 0.05) if near else shuffled_rows(init, b)
        bits[name] = b
    return tensors, plan, bits


def levels_case() -> tuple[dict[str, np.ndarray], Plan, dict[str, str]]:
    """Format 5: rows of shared levels (what ``bpw=`` training writes), at several
    level counts and densities, rearranged at random and near their init."""
    plan = Plan(SEED + 2)
    rng = np.random.default_rng(SEED + 2)
    tensors: dict[str, np.ndarray] = {}
    cases = [
        ("ternary.weight", dict(levels=1, scale=0.1, density=0.1), (12, 64), "float32"),
        ("four.weight", dict(levels=2, scale=0.05, density=0.5), (6, 3, 3, 3), "float32"),
        ("dense16.weight", dict(levels=8, scale=0.2, density=1.0), (5, 48), "float16"),
        ("near.weight", dict(levels=4, scale=0.3, density=0.9), (16, 64), "float32"),
    ]
    for i, (name, params, shape, dtype) in enumerate(cases):
        init = _seeded(plan, name, InitSpec("levels", **params), shape, dtype)
        near = name == "near.weight"
        arranged = near_init(init, rng, 0.02) if near else shuffled_rows(init, 20 + i)
        tensors[name] = arranged.reshape(shape)
    tensors["fc.bias"] = np.linspace(-1, 1, 12, dtype=np.float32)
    return tensors, plan, {"note": "golden levels"}


def _perm_rans_file(exact: bytes) -> bytes:
    """The exact file with its seeded float32 he_uniform tensor recoded as
    ``perm-rans`` (no current writer chooses it; format 1 wrote only this coding)."""
    from permcodec.coding import arrangement, rans
    from permcodec.coding.base import rans_bytes
    from permcodec.format import container
    from permcodec.format.reader import decode_tensor

    header, payloads, _ = split(exact)
    for t, i in zip(header["tensors"], range(len(payloads)), strict=True):
        if t["name"] != "he_uniform.weight":
            continue
        arr = decode_tensor(t, payloads[i])
        init = initial_rows(t["spec"], tuple(t["key"]), tuple(t["shape"]), t["dtype"])
        rc = arrangement.row_classes(init, order_keys(init, t["dtype"]))
        cls = arrangement.classes_of(order_keys(arr.reshape(init.shape), t["dtype"]), rc)
        payloads[i] = rans_bytes(*rans.encode(cls, rc.counts, 2))
        t.update(coding="perm-rans", lanes=2)
        t.pop("bound_bits", None)
        t["payload_digest"] = container.section_digest(payloads[i])
    return seal(header, payloads, version=4)


def _older(raw: bytes, version: int, keep: set[str]) -> bytes:
    """``raw`` with only the tensors of codings in ``keep``, written as ``version``."""
    header, payloads, _ = split(raw)
    pairs = [
        (t, p) for t, p in zip(header["tensors"], payloads, strict=True) if t["coding"] in keep
    ]
    if version < 2:
        pairs = [(t, p) for t, p in pairs if t.get("spec", {}).get("kind") != "quantile"]
    header["tensors"] = [t for t, _ in pairs]
    return seal(header, [p for _, p in pairs], version=version)


def main() -> None:
    from permcodec.format.writer import write_file

    manifest: dict[str, Any] = {}
    tensors, plan, meta = exact_case()
    save_numpy(_user_view(tensors), HERE / "v4_exact.perm", plan, meta)
    manifest["v4_exact.perm"] = {"plan": plan.to_dict(), "metadata": meta, "inputs": "exact"}

    lossy, lplan, bits = lossy_case()
    items = [(n, a, dtype_name(a)) for n, a in lossy.items()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LossyWarning)
        write_file(HERE / "v4_lossy.perm", items, lplan, {}, tensor_bits=bits)
    manifest["v4_lossy.perm"] = {
        "plan": lplan.to_dict(),
        "metadata": {},
        "tensor_bits": bits,
        "inputs": "lossy",
    }

    levels, vplan, vmeta = levels_case()
    save_numpy(levels, HERE / "v5_levels.perm", vplan, vmeta)
    manifest["v5_levels.perm"] = {"plan": vplan.to_dict(), "metadata": vmeta, "inputs": "levels"}

    exact = (HERE / "v4_exact.perm").read_bytes()
    (HERE / "v4_perm_rans.perm").write_bytes(_perm_rans_file(exact))
    (HERE / "v3_exact.perm").write_bytes(
        _older(exact, 3, {"row-rans", "bucket-rans", "raw", "raw-zstd"})
    )
    perm_rans = (HERE / "v4_perm_rans.perm").read_bytes()
    (HERE / "v2_mixed.perm").write_bytes(
        _older(perm_rans, 2, {"perm-rans", "bucket-rans", "raw", "raw-zstd"})
    )
    (HERE / "v1_perm_rans.perm").write_bytes(_older(perm_rans, 1, {"perm-rans", "raw-zstd", "raw"}))
    lossy_raw = (HERE / "v4_lossy.perm").read_bytes()
    (HERE / "v2_lossy.perm").write_bytes(_older(lossy_raw, 2, {"bucket-rans"}))

    np.savez(HERE / "inputs_exact.npz", **tensors)
    np.savez(HERE / "inputs_lossy.npz", **lossy)
    np.savez(HERE / "inputs_levels.npz", **levels)
    np.savez(HERE / "decoded_lossy.npz", **_decode_all(lossy_raw))
    for path in sorted(HERE.glob("*.perm")):
        raw = path.read_bytes()
        expected = {"v5_levels.perm": "inputs_levels.npz"}.get(
            path.name, "decoded_lossy.npz" if "lossy" in path.name else "inputs_exact.npz"
        )
        want = np.load(HERE / expected)
        for name, got in _decode_all(raw).items():  # every tensor is in the expected set
            assert got.tobytes() == want[name].tobytes() and got.dtype == want[name].dtype
        manifest.setdefault(path.name, {})["expected"] = expected
        manifest[path.name]["tensors"] = {
            t["name"]: {"coding": t["coding"], "dtype": t["dtype"]}
            for t in split(raw)[0]["tensors"]
        }
    manifest["_about"] = (
        "written by tests/golden/make_golden.py: formats 1-4 with permcodec 0.4.0, before "
        "the package was reshaped; v5_levels.perm with permcodec 0.5 (format 5, levels "
        "rows); bfloat16 arrays are stored as their uint16 bits"
    )
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _user_view(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """bfloat16 storage arrays as ml_dtypes.bfloat16, as numpy users hold them."""
    import ml_dtypes

    return {
        n: (a.view(ml_dtypes.bfloat16) if n.split(".")[0] in _BF16_NAMES else a)
        for n, a in tensors.items()
    }


def _decode_all(raw: bytes) -> dict[str, np.ndarray]:
    from permcodec.format.reader import decode_tensor

    header, payloads, _ = split(raw)
    return {
        t["name"]: decode_tensor(t, p) for t, p in zip(header["tensors"], payloads, strict=True)
    }


# the SPEC_CASES entries seeded as bfloat16 (every fourth, from the third)
_BF16_NAMES = {case[0] for i, case in enumerate(SPEC_CASES) if i % 4 == 2} | {"bfraw"}

GRID_FIELDS = ("symbols", "step_of", "steps", "q_lo", "outliers", "decoded")
TABLE_FIELDS = ("freqs", "table_of", "ctx_of", "contexts")


def grid_case() -> tuple[list[tuple[str, np.ndarray, str]], dict[str, Any]]:
    """Format 6: weight matrices of a model trained without LaPerm on grids (every float
    dtype, several steps, row groups and contexts of tables, escaped outliers), beside
    tensors stored exactly."""
    from permcodec.coding import grid_fit

    rng = np.random.default_rng(SEED + 3)
    smooth = np.cumsum(rng.standard_normal((12, 3, 9)), axis=2) * 0.05  # conv-like rows
    cases = [
        ("conv.weight", smooth.reshape(12, 3, 9, 1), "float32", rng.uniform(0.005, 0.05, 12)),
        ("fc.weight", rng.standard_normal((20, 48)) * 0.1, "float16", np.full(20, 0.02)),
        ("emb.weight", rng.standard_normal((40, 16)) * 0.3, "bfloat16", np.full(40, 0.1)),
        ("proj.weight", rng.laplace(size=(6, 64)) * 0.05, "float64", np.full(6, 0.004)),
    ]
    items, grids = [], {}
    for i, (name, values, dtype, steps) in enumerate(cases):
        values = values.astype(np.float32)
        values.flat[7 * (i + 1)] = 40.0  # an outlier to escape
        array = from_float32(values, dtype)
        items.append((name, array, dtype))
        grids[name] = grid_fit.fit_grid(array, dtype, steps, max_tables=4)
    grids["conv.weight"] = _forced_tables(grids["conv.weight"], groups=2, contexts=3)
    grids["fc.weight"] = _forced_tables(grids["fc.weight"], groups=4, contexts=5)
    items.append(("fc.bias", np.linspace(-1, 1, 20, dtype=np.float32), "float32"))
    items.append(("steps", np.arange(3, dtype=np.int64), "int64"))
    return items, grids


def _forced_tables(grid: Any, groups: int, contexts: int) -> Any:
    """``grid`` coded with ``groups`` row groups of ``contexts`` tables each (tables this
    small a tensor would not pay for, so that the golden file has them)."""
    import dataclasses

    from permcodec.coding import static_rans

    rows, n = grid.symbols.shape[0], grid.tables.freqs.shape[1]
    ctx_of = static_rans.symbol_contexts(grid.q_lo, n - 1, contexts)
    table_of = (np.arange(rows) * groups // rows).astype(np.uint8)
    probe = static_rans.Tables(np.zeros((groups * contexts, n), np.uint16), table_of, ctx_of,
                               contexts)  # fmt: skip
    which = probe.of_symbols(grid.symbols)
    counts = np.zeros((groups * contexts, n), dtype=np.int64)
    np.add.at(counts, (which, grid.symbols.astype(np.int64)), 1)
    tables = static_rans.Tables(static_rans.normalize(counts), table_of, ctx_of, contexts)
    return dataclasses.replace(grid, tables=tables)


def write_grid_golden() -> None:
    """Write v6_grid.perm, the inputs the writer takes (the grids' parts) and the
    decoded tensors, and add them to the manifest (the older files stay as they are)."""
    from permcodec.format.posthoc import write_grids

    items, grids = grid_case()
    path = HERE / "v6_grid.perm"
    write_grids(path, items, {"note": "golden grids"}, grids)
    parts = {}
    for name, g in grids.items():
        for f in GRID_FIELDS:
            parts[f"{name}/{f}"] = np.asarray(getattr(g, f))
        for f in TABLE_FIELDS:
            parts[f"{name}/{f}"] = np.asarray(getattr(g.tables, f))
    for name, array, _ in items:
        parts[f"{name}/array"] = array
    np.savez(HERE / "inputs_grid.npz", **parts)
    decoded = _decode_all(path.read_bytes())
    np.savez(HERE / "decoded_grid.npz", **decoded)
    manifest = json.loads((HERE / "manifest.json").read_text())
    manifest["v6_grid.perm"] = {
        "metadata": {"note": "golden grids"},
        "inputs": "grid",
        "items": [[n, dt] for n, _, dt in items],
        "expected": "decoded_grid.npz",
        "tensors": {
            t["name"]: {"coding": t["coding"], "dtype": t["dtype"]}
            for t in split(path.read_bytes())[0]["tensors"]
        },
    }
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def levels7_case() -> tuple[dict[str, np.ndarray], Plan, dict[str, str]]:
    """Format 7: the levels case of format 5 as the writer of permcodec 0.7 stores it
    (``level-rans`` where it pays), and two tensors large enough that it always does:
    ternary rows moved near their init, and a float16 tensor of four levels."""
    tensors, plan, _ = levels_case()
    rng = np.random.default_rng(SEED + 4)
    cases = [
        ("big.weight", dict(levels=1, scale=0.1, density=0.3), (48, 1400), "float32"),
        ("big16.weight", dict(levels=2, scale=0.05, density=0.6), (70, 1000), "float16"),
    ]
    for name, params, shape, dtype in cases:
        init = _seeded(plan, name, InitSpec("levels", **params), shape, dtype)
        tensors[name] = near_init(init, rng, 0.05).reshape(shape)
    return tensors, plan, {"note": "golden levels, format 7"}


def write_levels7_golden() -> None:
    """Write v7_levels.perm and its inputs, and add them to the manifest."""
    tensors, plan, meta = levels7_case()
    path = HERE / "v7_levels.perm"
    save_numpy(tensors, path, plan, meta)
    np.savez_compressed(HERE / "inputs_levels7.npz", **tensors)
    raw = path.read_bytes()
    for name, got in _decode_all(raw).items():
        assert got.tobytes() == tensors[name].tobytes() and got.dtype == tensors[name].dtype
    manifest = json.loads((HERE / "manifest.json").read_text())
    manifest["v7_levels.perm"] = {
        "plan": plan.to_dict(),
        "metadata": meta,
        "inputs": "levels7",
        "expected": "inputs_levels7.npz",
        "tensors": {
            t["name"]: {"coding": t["coding"], "dtype": t["dtype"]}
            for t in split(raw)[0]["tensors"]
        },
    }
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["v6"]:
        write_grid_golden()
    elif sys.argv[1:] == ["v7"]:
        write_levels7_golden()
    else:
        main()
