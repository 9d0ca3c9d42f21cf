"""Decode a file of a billion weights into .safetensors and measure the memory it takes.

A synthetic model of ``--tensors`` seeded 4096 x 4096 float32 matrices (60 by default:
1.007e9 weights, a 4.0 GB .safetensors file), every row shuffled, is saved as `.perm`
(row-rans); then ``permcodec decode`` and the native ``permcodec-decode`` write it to
.safetensors in fresh processes, one thread, and the peak resident memory of each is
read from ``/usr/bin/time``. The target (issue 23): at most the output plus 256 MiB,
and the output bit for bit.

    python benchmarks/big_decode.py --work /tmp/big      # about 10 minutes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import permcodec
from permcodec import InitSpec
from permcodec import numpy as pnp
from permcodec.core.initializers import initial_rows
from permcodec.core.plan import Plan

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native" / "permcodec-decode"
RESULTS = Path(__file__).parent / "results"
SHAPE = (4096, 4096)


def make_file(path: Path, tensors: int) -> int:
    """The synthetic `.perm` file; returns its weights."""
    plan, arrays, rng = Plan(0), {}, np.random.default_rng(0)
    for i in range(tensors):
        tp = plan.add(f"layer{i}.weight", InitSpec("he_uniform"), SHAPE)
        init = initial_rows(tp.spec, tp.key, SHAPE, "float32")
        arrays[f"layer{i}.weight"] = rng.permuted(init, axis=1)
    pnp.save(arrays, path, plan)
    return tensors * SHAPE[0] * SHAPE[1]


def peak_run(cmd: list[str]) -> tuple[float, int]:
    """(seconds, peak resident KiB) of a command in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=True,
        env={"PERMCODEC_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    seconds = time.perf_counter() - start
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return seconds, kib


def digest(path: Path) -> str:
    """BLAKE2b of the tensors of a .safetensors file, by name (headers may differ)."""
    from safetensors import safe_open

    h = hashlib.blake2b(digest_size=16)
    with safe_open(str(path), framework="numpy") as f:
        for name in sorted(f.keys()):
            h.update(name.encode() + np.ascontiguousarray(f.get_tensor(name)).tobytes())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for the big files")
    ap.add_argument("--tensors", type=int, default=60)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    src = args.work / "big.perm"
    t0 = time.perf_counter()
    weights = make_file(src, args.tensors)
    print(f"{weights:,} weights, {src.stat().st_size / 2**30:.2f} GiB .perm, "
          f"encoded in {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    cli = Path(sys.executable).with_name("permcodec")
    runs = {
        "permcodec decode": [str(cli), "decode", str(src), "-o", str(args.work / "py.safetensors"),
                             "--force"],
        "permcodec-decode (native)": [str(NATIVE), str(src), "-o",
                                      str(args.work / "c.safetensors"), "--force"],
    }  # fmt: skip
    records = []
    for label, cmd in runs.items():
        if label.endswith("(native)") and not NATIVE.exists():
            continue
        seconds, kib = peak_run(cmd)
        out = Path(cmd[cmd.index("-o") + 1])
        size = out.stat().st_size
        rec = {
            "decoder": label,
            "seconds": seconds,
            "weights_per_s": weights / seconds,
            "peak_mib": kib / 1024,
            "output_mib": size / 2**20,
            "over_output_mib": kib / 1024 - size / 2**20,
            "output_digest": digest(out),
        }
        records.append(rec)
        print(json.dumps(rec), flush=True)
    same = len({r["output_digest"] for r in records}) == 1
    check = permcodec.open(src)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "weights": weights,
        "perm_bytes": src.stat().st_size,
        "tensors": len(check.keys()),
        "outputs_identical": same,
        "records": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "big_decode.json").write_text(json.dumps(report, indent=1))
    print(f"outputs identical: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
