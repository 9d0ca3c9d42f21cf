"""LaPerm's training overhead: time per epoch against the plain inner optimizer, on CPU.

One command:

    python benchmarks/train_overhead.py            # lenet300, lenet5 on Fashion-MNIST

Each variant (plain Adam, LaPerm k=20, LaPerm k=1) trains its own copy of the model
with the same seed and data order; their epochs run interleaved (Adam, k=20, k=1, then
k=20, k=1, Adam, ...), so load from other jobs on the machine falls on all of them alike. The
figure is the median over rounds of each round's epoch-time ratio. Prints a table and writes
``results/train_overhead.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import permcodec
from permcodec.experiments.data import Dataset, batches, load_dataset
from permcodec.experiments.train import TrainConfig, build

RESULTS = Path(__file__).parent / "results"
VARIANTS: dict[str, dict[str, Any]] = {
    "adam": dict(baseline=True),
    "laperm k=20": dict(sync_period=20),
    "laperm k=1": dict(sync_period=1),
}


def one_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data: Dataset,
    gen: torch.Generator,
    steps: int | None = None,
) -> float:
    """Seconds for one training epoch, as ``permcodec train`` runs it (its first ``steps``
    batches, when given: a short run)."""
    model.train()
    t0 = time.perf_counter()
    batch = batches(data.x_train, data.y_train, 128, shuffle=True, generator=gen)
    for xb, yb in itertools.islice(batch, steps):
        opt.zero_grad()
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        loss.backward()
        opt.step()
        loss.item()
    return time.perf_counter() - t0


def measure(
    model_name: str, data: Dataset, epochs: int, steps: int | None = None
) -> dict[str, Any]:
    """Interleaved epochs of every variant; per-variant epoch times."""
    base = TrainConfig(model=model_name, dataset="fashion-mnist", seed=0, epochs=epochs)
    if model_name == "lenet5":
        base = replace(base, min_row=32)
    runs = {}
    for label, over in VARIANTS.items():
        model, opt = build(replace(base, **over), data)
        runs[label] = (model, opt, torch.Generator().manual_seed(0), [])
    labels = list(runs)
    for epoch in range(epochs):  # rotate who goes first, so no variant always follows another
        for label in labels[epoch % 3 :] + labels[: epoch % 3]:
            model, opt, gen, times = runs[label]
            times.append(one_epoch(model, opt, data, gen, steps))
    medians = {label: statistics.median(r[3]) for label, r in runs.items()}
    return {
        "model": model_name,
        "steps_per_epoch": steps,
        "epoch_seconds": {label: r[3] for label, r in runs.items()},
        "median_seconds": medians,
        # per round, the ratio of epochs run back to back; its median resists load that
        # comes and goes better than a ratio of medians
        "overhead": {
            label: statistics.median(
                t / a for t, a in zip(runs[label][3], runs["adam"][3], strict=True)
            )
            - 1
            for label in runs
            if label != "adam"
        },
    }


def table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| model | adam s/epoch | LaPerm k=20 s/epoch | overhead k=20 | LaPerm k=1 s/epoch "
        "| overhead k=1 |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        m, o = r["median_seconds"], r["overhead"]
        lines.append(
            f"| {r['model']} | {m['adam']:.2f} | {m['laperm k=20']:.2f} | "
            f"{100 * o['laperm k=20']:+.1f}% | {m['laperm k=1']:.2f} | "
            f"{100 * o['laperm k=1']:+.1f}% |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--epochs", type=int, default=8, help="Epochs per variant (median).")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (NNCodec and the decoder use one)"
    )
    ap.add_argument(
        "--steps", type=int, default=None, help="batches per epoch (default: the whole set)"
    )
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "train_overhead.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", args.data_dir)
    records = []
    for name in args.models.split(","):
        records.append(measure(name, data, args.epochs, args.steps))
        print(f"{name}: " + json.dumps(records[-1]["median_seconds"]), flush=True)
    print(table(records))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "threads": args.threads,
                "torch": torch.__version__,
                "permcodec": permcodec.__version__,
                "platform": platform.platform(),
                "records": records,
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
