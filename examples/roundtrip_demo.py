"""Demo: seed a LeNet-300-100, rearrange its rows, and take it through the whole codec.

Runs on the embedded default (no data, no download): the rows are shuffled as a
stand-in for LaPerm training, which only ever rearranges them. Then it goes
save_checkpoint -> `permcodec encode` -> `permcodec info` / `verify` -> `permcodec decode`
and checks the weights come back bit-identical, from the CLI and the Python API.

    python examples/roundtrip_demo.py [--workdir DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import permcodec


def lenet300() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def shuffle_rows(model: nn.Module, generator: torch.Generator) -> None:
    """Rearrange every seeded row at random: what training by permutation does."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in model.permcodec_plan.tensors:
                rows = p.view(p.shape[0], -1)
                order = torch.argsort(torch.rand(rows.shape, generator=generator), dim=1)
                rows.copy_(torch.gather(rows, 1, order))


def cli(*args: str) -> None:
    exe = shutil.which("permcodec")
    cmd = [exe] if exe else [sys.executable, "-m", "permcodec_cli"]
    print("$ permcodec " + " ".join(args), flush=True)
    subprocess.run([*cmd, *args], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    ap.add_argument("--seed", type=int, default=2020)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="permcodec-demo-"))
    work.mkdir(parents=True, exist_ok=True)

    model = lenet300()
    plan = permcodec.init(model, seed=args.seed)  # He-uniform, one row per output unit
    print(f"seeded {len(plan.tensors)} weight tensors from seed {args.seed}")
    shuffle_rows(model, torch.Generator().manual_seed(0))
    permcodec.save_checkpoint(model, work / "model.pt")

    cli("encode", str(work / "model.pt"), "-o", str(work / "model.perm"), "--force")
    cli("info", str(work / "model.perm"))
    cli("verify", str(work / "model.perm"))
    cli("decode", str(work / "model.perm"), "-o", str(work / "decoded.pt"), "--force")

    original = model.state_dict()
    from_cli = torch.load(work / "decoded.pt", weights_only=True)
    from_api = permcodec.load(work / "model.perm")
    ok = (
        all(
            torch.equal(original[k], from_cli[k]) and torch.equal(original[k], from_api[k])
            for k in original
        )
        and original.keys() == from_cli.keys() == from_api.keys()
    )
    fp32 = sum(t.numel() for t in original.values()) * 4
    size = (work / "model.perm").stat().st_size
    print(f"float32 state dict: {fp32} bytes; .perm: {size} bytes ({fp32 / size:.2f}x smaller)")
    print("bit-identical round trip (CLI and API):", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
