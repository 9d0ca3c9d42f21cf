"""Training by permutation on transformers: LaPerm against AdamW on byte-level language
models, every matrix seeded (attention's packed Q/K/V, embeddings, MLPs).

One command runs every group (each run is ``permcodec.experiments.train.run``: same
seed, init, batches, warmup-and-cosine schedule and clipping for LaPerm and its
AdamW baseline; 1,500 steps on the Python standard library's own source):

    python benchmarks/transformer_experiments.py            # all groups
    python benchmarks/transformer_experiments.py --groups main --seeds 0,1,2

* ``main``: LaPerm (k = 50) and AdamW on lm-tiny (0.26M) and lm-small (0.84M);
* ``ksweep``: the sync period k on lm-tiny;
* ``parts``: which matrices are permuted (attention, MLP or embeddings alone);
* ``rate``: ``--bpw R`` on lm-tiny next to int8, 4-bit, float16 and NNCodec of the
  AdamW model (validation loss of the decoded model against bits per weight);
* ``timing``: time per step of LaPerm against AdamW, interleaved, one thread.

Results append to ``benchmarks/results/transformer.jsonl`` (a finished run is not
run again); the tables go to ``transformer.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

import permcodec
from permcodec.experiments.lm import bits_per_byte, evaluate_lm
from permcodec.experiments.models import LANGUAGE_MODELS, build_lm
from permcodec.experiments.text import load_text
from permcodec.experiments.train import TrainConfig, build, make_task, run

sys.path.insert(0, str(Path(__file__).parent))
import baselines

RESULTS = Path(__file__).parent / "results"
EPOCHS = 6  # x 250 steps
BASE = TrainConfig(model="lm-tiny", epochs=EPOCHS)
GROUPS = ("main", "ksweep", "parts", "rate", "timing")
NNCODEC_QPS = tuple(range(-44, -13, 3))


def variants(group: str, seeds: list[int]) -> list[tuple[str, TrainConfig]]:
    """(label, config) of every run of a group."""
    out = []
    if group == "main":
        for model in LANGUAGE_MODELS:
            for seed in seeds:
                for base in (True, False):
                    label = f"{model} {'AdamW' if base else 'LaPerm k=50'}"
                    out.append((label, replace(BASE, model=model, seed=seed, baseline=base)))
    elif group == "ksweep":
        for k in (10, 20, 100, 300):
            out.append((f"lm-tiny LaPerm k={k}", replace(BASE, sync_period=k)))
    elif group == "parts":
        for label, parts in (
            ("attention (Q/K/V, out) only", "self_attn"),
            ("MLP only", "linear1,linear2"),
            ("embeddings only", "tok,pos"),
        ):
            out.append((f"lm-tiny LaPerm, {label}", replace(BASE, seeded=parts)))
    elif group == "rate":
        for r in (0.5, 1.0, 2.0, 4.0):  # measured by rows, the default allocation then
            cfg = replace(BASE, bpw=r, allocation="rows")
            out.append((f"lm-tiny LaPerm --bpw {r:g}", cfg))
    return out


def file_bits_per_param(path: Path) -> tuple[float, float]:
    """(whole file in bits per parameter, everything included; weight matrices in bits
    per weight, container included). A tied head is stored, and counted, once."""
    with permcodec.open(path) as f:
        info, split = f.info(), f.size_split()
    return 8 * info["file_bytes"] / info["numel"], split["bits_per_weight"]


def measure_run(label: str, cfg: TrainConfig, group: str, cache: Path) -> dict[str, Any]:
    stem = label.replace(" ", "_").replace("/", "-").replace(",", "").replace("=", "")
    out = cache / f"{stem}_s{cfg.seed}.perm"
    t0 = time.perf_counter()
    result = run(cfg, out, progress=False)
    rec = {
        "group": group,
        "label": label,
        "seed": cfg.seed,
        "config": asdict(result.config),
        "val_loss": result.final_test_loss,
        "bits_per_byte": bits_per_byte(result.final_test_loss),
        "seconds": time.perf_counter() - t0,
        "seconds_per_step": sum(e.seconds for e in result.epochs) / (EPOCHS * 250),
    }
    if not cfg.baseline:
        rec["file_bits_per_param"], rec["weight_bits_per_weight"] = file_bits_per_param(out)
    else:
        rec["checkpoint"] = str(out.with_suffix(".pt"))
    return rec


def adam_codecs(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """int8, 4-bit, float16 and NNCodec of an AdamW model: validation loss against bits."""
    cfg = TrainConfig(**rec["config"])
    data = load_text(cfg.dataset)
    context = LANGUAGE_MODELS[cfg.model][-1]
    sd = torch.load(rec["checkpoint"], weights_only=True)["state_dict"]
    names = [
        k for k, v in sd.items() if v.dim() >= 2 and v.is_floating_point() and k != "head.weight"
    ]
    count = sum(sd[n].numel() for n in names)
    codecs = {n: baselines.BASELINES[n] for n in ("float16", "int8", "4bit-quantile")}
    if not baselines.NNCODEC_ERROR:
        codecs.update({f"nncodec qp={qp}": baselines.nncodec_at(qp) for qp in NNCODEC_QPS})
    out = []
    for name, codec in codecs.items():
        decoded, bits = codec(sd, names)
        decoded["head.weight"] = decoded["tok.weight"]  # tied
        model = build_lm(cfg.model)
        model.load_state_dict(decoded)
        loss = evaluate_lm(model, data, context)[0]
        out.append(
            {
                "group": "rate",
                "label": f"lm-tiny AdamW, {name}",
                "seed": cfg.seed,
                "val_loss": loss,
                "bits_per_byte": bits_per_byte(loss),
                "weight_bits_per_weight": bits / count,
            }
        )
    return out


def timing(rounds: int = 6, steps: int = 60) -> list[dict[str, Any]]:
    """Seconds per step of LaPerm (k = 50) and of AdamW, interleaved, one thread."""
    out = []
    for model_name in LANGUAGE_MODELS:
        data = load_text("python-stdlib")
        per = {True: [], False: []}
        for r in range(rounds):
            for base in (r % 2 == 0, r % 2 == 1):
                cfg = replace(BASE, model=model_name, baseline=base).resolved()
                model, opt = build(cfg, data)
                task = make_task(cfg, data)
                batches = [next(iter(task.batches())) for _ in range(steps)]
                t0 = time.perf_counter()
                for x, y in batches:
                    opt.zero_grad()
                    task.loss(model(x), y).backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                per[base].append((time.perf_counter() - t0) / steps)
        ratio = statistics.median(a / b for a, b in zip(per[False], per[True], strict=True))
        out.append(
            {
                "group": "timing",
                "label": model_name,
                "adamw_s_per_step": statistics.median(per[True]),
                "laperm_s_per_step": statistics.median(per[False]),
                "ratio": ratio,
            }
        )
    return out


def _mean_of(rs: list[dict[str, Any]], key: str, spec: str) -> str:
    values = [r[key] for r in rs if r.get(key) is not None]
    return format(statistics.fmean(values), spec) if values else ""


def tables(records: list[dict[str, Any]]) -> str:
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r["group"] != "timing":
            by.setdefault((r["group"], r["label"]), []).append(r)
    lines = [
        "| group | run | seeds | val loss (nats/byte) | bits/byte | file bits/param "
        "| weight matrices bits/weight | s/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (group, label), rs in by.items():
        loss = [r["val_loss"] for r in rs]
        mean = statistics.fmean(loss)
        std = statistics.stdev(loss) if len(loss) > 1 else 0.0
        baseline = "AdamW" in label and "," not in label
        lines.append(
            f"| {group} | {label} | {len(rs)} | {mean:.4f} ± {std:.4f} | "
            f"{mean / math.log(2):.4f} | "
            f"{'32 (float32)' if baseline else _mean_of(rs, 'file_bits_per_param', '.3f')} | "
            f"{_mean_of(rs, 'weight_bits_per_weight', '.3f')} | "
            f"{_mean_of(rs, 'seconds_per_step', '.4f')} |"
        )
    timings = [r for r in records if r["group"] == "timing"]
    if timings:
        lines += [
            "",
            "| model | AdamW s/step | LaPerm s/step | ratio (median of rounds) |",
            "|---|---|---|---|",
        ]
        for t in timings:
            lines.append(
                f"| {t['label']} | {t['adamw_s_per_step']:.4f} | {t['laperm_s_per_step']:.4f} | "
                f"{t['ratio']:.3f} |"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", default=",".join(GROUPS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    groups = [g for g in args.groups.split(",") if g]
    cache = args.out / "transformer_cache"
    cache.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "transformer.jsonl"
    records = (
        [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    )
    done = {(r["group"], r["label"], r.get("seed")) for r in records}

    def keep(rec: dict[str, Any]) -> None:
        records.append(rec)
        with jsonl.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({k: v for k, v in rec.items() if k != "config"}), flush=True)

    for group in groups:
        if group == "timing":
            if not any(r["group"] == "timing" for r in records):
                for rec in timing():
                    keep(rec)
            continue
        runs = variants(group, seeds)
        if group == "rate":  # the AdamW model the codecs compress
            runs = [("lm-tiny AdamW", replace(BASE, baseline=True)), *runs]
        for label, cfg in runs:
            if (group, label, cfg.seed) in done:
                continue
            rec = measure_run(label, cfg, group, cache)
            keep(rec)
            if group == "rate" and cfg.baseline:
                for point in adam_codecs(rec):
                    keep(point)
    text = tables(records)
    print(text)
    (args.out / "transformer.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
