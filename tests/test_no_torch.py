"""The numpy side works where torch cannot be imported at all."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

from permcodec import numpy as pnp
from permcodec.core.initializers import initial_rows as init_rows
from permcodec.core.plan import Plan

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, importlib.abc, json, sys

attempts = []

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torch" or fullname.startswith("torch."):
            attempts.append(fullname)
            raise ImportError(f"torch is blocked in this test ({fullname})")
        return None

sys.meta_path.insert(0, BlockTorch())
for mod in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
    del sys.modules[mod]

import permcodec

path = sys.argv[1]
loaded = permcodec.load_numpy(path)
with permcodec.open(path) as pf:
    info = pf.info()
    problems = pf.verify()
    single = {n: hashlib.sha256(pf.tensor(n).tobytes()).hexdigest() for n in pf.keys()}

try:
    permcodec.load(path)
    torch_api = "worked"
except ImportError:
    torch_api = "ImportError"

print(json.dumps({
    "digests": {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in loaded.items()},
    "dtypes": {k: v.dtype.name for k, v in loaded.items()},
    "shapes": {k: list(v.shape) for k, v in loaded.items()},
    "single": single,
    "info_numel": info["numel"],
    "info_names": [t["name"] for t in info["tensors"]],
    "problems": problems,
    "torch_api": torch_api,
    "torch_modules": sorted(m for m, v in sys.modules.items()
                            if (m == "torch" or m.startswith("torch.")) and v is not None),
    "blocked": attempts,
}))
"""


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_numpy_load_without_torch(tmp_path, permute_rows):
    rng = np.random.default_rng(0)
    plan = Plan(99)
    tensors: dict[str, np.ndarray] = {}
    for name, shape, dtype in [
        ("fc.weight", (16, 30), "float32"),
        ("conv.weight", (8, 3, 3, 3), "float16"),
        ("bf.weight", (6, 10), "bfloat16"),
        ("d.weight", (5, 7), "float64"),
    ]:
        tp = plan.add(name, "he_normal" if dtype == "float16" else "he_uniform", shape)
        rows = permute_rows(init_rows(tp.spec, tp.key, shape, dtype), rng).reshape(shape)
        tensors[name] = rows.view(ml_dtypes.bfloat16) if dtype == "bfloat16" else rows
    tensors["fc.bias"] = rng.standard_normal(16).astype(np.float32)
    tensors["steps"] = np.array(42, dtype=np.int64)
    path = tmp_path / "model.perm"
    pnp.save(tensors, path, plan)

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["torch_modules"] == []
    assert out["torch_api"] == "ImportError"
    assert "torch" in out["blocked"]  # the torch API really tried, and was refused
    assert out["problems"] == []
    assert out["info_names"] == list(tensors)
    assert out["info_numel"] == sum(a.size for a in tensors.values())
    expected = {k: _digest(v) for k, v in tensors.items()}
    assert out["digests"] == expected
    assert out["single"] == {
        k: _digest(v.view(np.uint16) if v.dtype == ml_dtypes.bfloat16 else v)
        for k, v in tensors.items()
    }
    assert out["dtypes"] == {k: v.dtype.name for k, v in tensors.items()}
    assert out["dtypes"]["bf.weight"] == "bfloat16"
    assert out["shapes"] == {k: list(v.shape) for k, v in tensors.items()}


def test_importing_permcodec_does_not_import_torch():
    code = "import sys, permcodec, permcodec.numpy, permcodec.format.reader;print('torch' in sys.modules)"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


BLOCKED_CLI = r"""
import importlib.abc, sys
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torch" or fullname.startswith("torch."):
            raise ImportError(f"torch is blocked in this test ({fullname})")
        return None
sys.meta_path.insert(0, BlockTorch())
from permcodec.cli.main import main
sys.argv = ["permcodec", *sys.argv[1:]]
main()
"""


def test_the_cli_without_torch_says_which_output_needs_it(tmp_path):
    path = tmp_path / "m.perm"
    pnp.save({"w": np.arange(12, dtype=np.float32).reshape(3, 4)}, path, Plan(1))

    def cli(*args):
        return subprocess.run([sys.executable, "-c", BLOCKED_CLI, *map(str, args)],
                              capture_output=True, text=True)  # fmt: skip

    done = cli("decode", path, "-o", tmp_path / "m.pt")
    assert done.returncode == 1
    assert done.stderr.startswith("permcodec: error: writing .pt files needs torch")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()
    assert cli("decode", path, "-o", tmp_path / "m.npz").returncode == 0
