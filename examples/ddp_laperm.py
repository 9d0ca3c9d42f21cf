"""LaPerm under DistributedDataParallel: every rank ends with the same weights and file.

    torchrun --standalone --nproc_per_node=2 examples/ddp_laperm.py --out-dir /tmp/ddp

Each rank trains on its own shard of a synthetic task (gloo backend, CPU), LaPerm
syncs after the all-reduced steps, and each rank writes ``rank{N}.perm``; the files are
byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import permcodec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--sync-period", type=int, default=7)
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # same biases on every rank; permcodec.init seeds the weights
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    permcodec.init(model, seed=11)
    ddp = DDP(model)
    opt = permcodec.LaPerm(
        ddp, torch.optim.Adam(ddp.parameters(), lr=1e-2), sync_period=args.sync_period
    )
    g = torch.Generator().manual_seed(100 + rank)  # a different data shard per rank
    w_true = torch.randn(16, 4, generator=torch.Generator().manual_seed(5))
    for _ in range(args.steps):
        x = torch.randn(64, 16, generator=g)
        y = (x @ w_true).argmax(1)
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"rank{rank}.perm"
    permcodec.save(ddp, path)  # syncs the steps since the last sync first
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"rank {rank}/{world}: {opt.syncs} syncs, {path.name} sha256 {digest[:16]}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
