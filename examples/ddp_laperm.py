"""LaPerm under DistributedDataParallel: every rank ends with the same weights and file.

    torchrun --standalone --nproc_per_node=2 examples/ddp_laperm.py --out-dir /tmp/ddp
    torchrun --standalone --nproc_per_node=2 examples/ddp_laperm.py --model transformer ...

Each rank trains on its own shard of a synthetic task (gloo backend, CPU), LaPerm
syncs after the all-reduced steps, and each rank writes ``rank{N}.perm``; the files are
byte-identical. ``--model transformer`` trains a small attention model the way
transformers are trained: AdamW with weight decay, a warmup-and-cosine schedule through
the LaPerm wrapper, gradient clipping and accumulation over two micro-batches.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import permcodec


class Attention(nn.Module):
    """A token embedding, one transformer block (packed Q/K/V attention, an MLP) and a
    linear head: every matrix of it is seeded."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(32, 16)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, 0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.emb(x)).mean(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--sync-period", type=int, default=7)
    ap.add_argument("--model", choices=["mlp", "transformer"], default="mlp")
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # same biases on every rank; permcodec.init seeds the weights
    transformer = args.model == "transformer"
    model = (
        Attention()
        if transformer
        else nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    )
    permcodec.init(model, seed=11)
    ddp = DDP(model)
    inner = (
        torch.optim.AdamW(ddp.parameters(), lr=3e-3, weight_decay=0.1)
        if transformer
        else torch.optim.Adam(ddp.parameters(), lr=1e-2)
    )
    opt = permcodec.LaPerm(ddp, inner, sync_period=args.sync_period)
    warm = max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / args.steps))
    )
    g = torch.Generator().manual_seed(100 + rank)  # a different data shard per rank
    w_true = torch.randn(16, 4, generator=torch.Generator().manual_seed(5))
    micro = 2 if transformer else 1
    for _ in range(args.steps):
        opt.zero_grad()
        for _ in range(micro):  # gradient accumulation: one LaPerm step per micro-batches
            if transformer:
                x = torch.randint(0, 32, (16, 12), generator=g)
                y = x[:, 0] % 4
                loss = F.cross_entropy(ddp(x), y) / micro
            else:
                x = torch.randn(64, 16, generator=g)
                loss = F.cross_entropy(ddp(x), (x @ w_true).argmax(1))
            loss.backward()
        if transformer:
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
        opt.step()
        schedule.step()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"rank{rank}.perm"
    permcodec.save(ddp, path)  # stores the synced form of the steps since the last sync
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"rank {rank}/{world}: {opt.syncs} syncs, {path.name} sha256 {digest[:16]}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
