"""A user's own transformer, trained by LaPerm with permcodec's defaults, against AdamW.

Not a built-in model: a byte-level language model assembled as a user would, from
``nn.Embedding`` (bytes and positions), ``nn.TransformerEncoderLayer`` (pre-norm, causal
mask) and a ``Linear`` head (pre-norm and, torch's default, post-norm layers), on text the
project's experiments never used (the licence
texts Debian ships in ``/usr/share/common-licenses``, last 10% held out). AdamW at 3e-3
(decay 0.01), 700 steps of 16 windows of 64 bytes, one thread, the same seed, init and
batches for every run. LaPerm runs are ``permcodec.init(model, seed)`` (``default``: no
scheme named, which for a model with attention is ``glorot_uniform`` for the weight
matrices and torch's N(0, 1) for the embedding tables) or ``permcodec.init(model, seed,
scheme)`` for the other schemes of ``--schemes`` (permcodec 0.6 used ``he_uniform`` when
none was named, 0.7.0 ``glorot_uniform`` for every matrix of a transformer), and
``permcodec.LaPerm(model, AdamW(...))`` with its defaults (k = 20).

    python benchmarks/user_transformer.py                  # seeds 0, 1, 2
    python benchmarks/user_transformer.py --seeds 0 --schemes default

Prints a table and writes ``benchmarks/results/user_transformer.{jsonl,md}`` (a finished
run is not run again).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import permcodec

CORPUS = Path("/usr/share/common-licenses")
RESULTS = Path(__file__).parent / "results"
JSONL = RESULTS / "user_transformer.jsonl"
STEPS, BATCH, CONTEXT, LR = 700, 16, 64, 3e-3


class ByteTransformer(nn.Module):
    """Bytes in, next-byte logits out: what a user writes from torch's own layers."""

    def __init__(self, norm_first: bool, width: int = 128, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.tokens = nn.Embedding(256, width)
        self.positions = nn.Embedding(CONTEXT, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                           batch_first=True, norm_first=norm_first)  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 256)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(CONTEXT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokens(x) + self.positions(torch.arange(x.shape[1], device=x.device))
        h = self.blocks(h, mask=self.mask[: x.shape[1], : x.shape[1]], is_causal=True)
        return self.head(self.norm(h))


def corpus() -> tuple[torch.Tensor, torch.Tensor]:
    """(train bytes, validation bytes): the licence texts, sorted by name, 90/10."""
    data = b"".join(p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.is_file())
    t = torch.tensor(list(data), dtype=torch.long)
    cut = int(0.9 * len(t))
    return t[:cut], t[cut:]


def windows(data: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + torch.arange(CONTEXT + 1)
    chunk = data[idx]
    return chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def validation_loss(model: nn.Module, val: torch.Tensor) -> float:
    """Mean next-byte cross-entropy (nats) over the validation text's whole windows."""
    model.eval()
    starts = torch.arange(0, len(val) - CONTEXT - 1, CONTEXT)
    total, count = 0.0, 0
    for chunk in starts.split(256):
        x, y = windows(val, chunk)
        total += F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


def run(method: str, seed: int, variant: str, train: torch.Tensor, val: torch.Tensor) -> dict:
    """One training run: ``AdamW``, or LaPerm with ``init(model, seed)`` at the scheme
    named (``default``: no scheme argument); ``variant`` "pre-norm" or "post-norm"."""
    torch.manual_seed(seed)
    model = ByteTransformer(norm_first=variant == "pre-norm")
    inner = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    if method == "AdamW":
        opt = inner
    else:
        if method == "default":
            permcodec.init(model, seed)
        else:
            permcodec.init(model, seed, method)
        opt = permcodec.LaPerm(model, inner)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(STEPS):
        x, y = windows(train, torch.randint(0, len(train) - CONTEXT - 1, (BATCH,), generator=gen))
        opt.zero_grad()
        F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1)).backward()
        opt.step()
    if method != "AdamW":
        opt.sync()  # what permcodec.save stores
    return {"method": method, "seed": seed, "variant": variant,
            "val_loss": validation_loss(model, val),
            "seconds": time.perf_counter() - t0}  # fmt: skip


def report(records: list[dict], methods: list[str], variant: str) -> str:
    records = [r for r in records if r.get("variant", "pre-norm") == variant]
    adam = {r["seed"]: r["val_loss"] for r in records if r["method"] == "AdamW"}
    lines = [
        f"{variant} layers (`nn.TransformerEncoderLayer(norm_first={variant == 'pre-norm'})`):",
        "",
        "| method | validation loss (nats/byte), mean ± std | bits/byte | / AdamW (mean of per-seed ratios) | seeds |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for m in ["AdamW", *methods]:
        rs = [r for r in records if r["method"] == m]
        if not rs:
            continue
        loss = [r["val_loss"] for r in rs]
        ratio = [r["val_loss"] / adam[r["seed"]] for r in rs if r["seed"] in adam]
        sd = statistics.stdev(loss) if len(loss) > 1 else 0.0
        name = (
            "LaPerm, `init(model, seed)`: the default (here glorot_uniform, embeddings N(0, 1))"
            if m == "default"
            else m
            if m == "AdamW"
            else f"LaPerm, `init(model, seed, {m!r})`"
        )
        if m == "he_uniform":
            name += " (the default of permcodec 0.6)"
        elif m == "glorot_uniform":
            name += " (the default of permcodec 0.7.0)"
        lines.append(
            f"| {name} | {statistics.mean(loss):.4f} ± {sd:.4f} | "
            f"{statistics.mean(loss) / math.log(2):.3f} | "
            f"{statistics.mean(ratio):.3f}x | {len(rs)} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--schemes", default="default,glorot_uniform,he_uniform,torch_default",
                    help="LaPerm runs: 'default' (no scheme argument) or scheme names")  # fmt: skip
    ap.add_argument("--variants", default="pre-norm,post-norm")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.schemes.split(",")
    RESULTS.mkdir(exist_ok=True)
    records = [json.loads(x) for x in JSONL.read_text().splitlines()] if JSONL.exists() else []
    done = {(r["method"], r["seed"], r.get("variant", "pre-norm")) for r in records}
    train, val = corpus()
    variants = args.variants.split(",")
    with JSONL.open("a") as out:
        for variant, seed, method in (
            (v, s, m) for v in variants for s in seeds for m in ["AdamW", *methods]
        ):
            if (method, seed, variant) not in done:
                rec = run(method, seed, variant, train, val)
                out.write(json.dumps(rec) + "\n")
                out.flush()
                records.append(rec)
                print(json.dumps(rec), flush=True)
    table = "\n\n".join(report(records, methods, v) for v in variants)
    head = ("# A user's transformer: LaPerm with the defaults against AdamW\n\n"
            "Made by `python benchmarks/user_transformer.py` (see its docstring for the set-up).\n\n")  # fmt: skip
    (RESULTS / "user_transformer.md").write_text(head + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
