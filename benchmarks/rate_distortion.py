"""Rate-distortion on Fashion-MNIST: test accuracy against bits per weight.

permcodec's modes (lossless dense, sparse, weight-agnostic, LaPerm-trained at b bits,
post-hoc rank buckets b = 8..1 of a lossless LaPerm model, approximate on the Adam
model) next to float32+zstd, float16, int8, 4-bit quantile and NNCodec applied to the
Adam model, all measured in one run. One command:

    python benchmarks/rate_distortion.py        # lenet300, lenet5 (10 epochs), conv2 (5)

Bits per weight count only the weight matrices (biases and norm layers are kept
exact by every method and left out of the count); for permcodec they are the file's
bytes less the other tensors' payloads, so header and container are included. Trained
models are cached in ``benchmarks/results/rd_cache/`` and results append to
``rate_distortion.jsonl``, so an interrupted run resumes. Prints a table per model and
writes ``rate_distortion.md``, ``.json`` and ``.png`` beside the JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import permcodec
from permcodec.experiments.data import Dataset, load_dataset
from permcodec.experiments.models import build_model
from permcodec.experiments.train import TrainConfig, evaluate_model, run
from permcodec.torch import plan_of

sys.path.insert(0, str(Path(__file__).parent))
import baselines

RESULTS = Path(__file__).parent / "results"
#: Training epochs per model unless --epochs says otherwise.
EPOCHS = {"lenet300": 10, "lenet5": 10, "conv2": 5}
POST_HOC_BITS = (8, 6, 4, 3, 2, 1)
APPROX_BITS = (8, 6, 4, 3, 2)
#: The Adam baseline starts from permcodec.init(model, seed); approximating it with that
#: same seed would let the context coder exploit the init it never left. A different
#: seed measures the general case of a model from anywhere.
APPROX_SEED = 1

#: model -> trained variants: label -> TrainConfig overrides.
TRAINED: dict[str, dict[str, dict[str, Any]]] = {
    "lenet300": {
        "adam": dict(baseline=True),
        "laperm": dict(),
        "laperm 30% kept": dict(density=0.3),
        "laperm 10% kept": dict(density=0.1),
        "laperm weight-agnostic ±0.08": dict(
            init="constant:value=0.08,random_sign=true", sync_period=250, lr=3e-3
        ),
        "laperm bits=4": dict(bits=4),
        "laperm bits=2": dict(bits=2),
        "laperm bits=1": dict(bits=1),
    },
    "lenet5": {
        "adam": dict(baseline=True),
        "laperm": dict(min_row=32),
        "laperm bits=4": dict(min_row=32, bits=4),
        "laperm bits=2": dict(min_row=32, bits=2),
    },
    "conv2": {
        "adam": dict(baseline=True),
        "laperm": dict(min_row=32),
        "laperm bits=2": dict(min_row=32, bits=2),
    },
}


def weight_names(sd: dict[str, torch.Tensor]) -> list[str]:
    """The weight matrices (Linear and Conv weights) a codec compresses."""
    return [k for k, v in sd.items() if v.dim() >= 2 and v.is_floating_point()]


def weight_count(sd: dict[str, torch.Tensor]) -> int:
    return sum(sd[k].numel() for k in weight_names(sd))


def epochs_for(args: argparse.Namespace, model: str) -> int:
    """Training epochs of ``model``: --epochs, else its default in :data:`EPOCHS`."""
    return args.epochs if args.epochs is not None else EPOCHS[model]


def train_cached(
    model: str,
    label: str,
    over: dict[str, Any],
    args: argparse.Namespace,
    data: Dataset,
) -> tuple[dict[str, torch.Tensor], permcodec.Plan | None, float]:
    """Train (or reuse) one variant; returns its state dict, plan and final accuracy."""
    epochs, seed = epochs_for(args, model), args.seed
    cache = args.out / "rd_cache"
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"{model}_{label.replace(' ', '_').replace('%', 'pc').replace('±', 'pm')}"
    base = cache / f"{stem}_s{seed}_e{epochs}"
    meta = base.with_suffix(".json")
    cfg = replace(
        TrainConfig(model=model, dataset="fashion-mnist"), epochs=epochs, seed=seed, **over
    )
    if not meta.exists():
        result = run(cfg, base.with_suffix(".perm"), progress=False, data=data)
        meta.write_text(json.dumps({"final_test_acc": result.final_test_acc}))
    acc = json.loads(meta.read_text())["final_test_acc"]
    if cfg.baseline:
        sd = torch.load(base.with_suffix(".pt"), weights_only=True)["state_dict"]
        return sd, None, acc
    path = base.with_suffix(".perm")
    with permcodec.open(path) as pf:
        plan = plan_of(pf)
    return permcodec.load(path), plan, acc


def accuracy(model: str, sd: dict[str, torch.Tensor], data: Dataset) -> float:
    net = build_model(
        model, in_channels=data.in_channels, image_size=data.image_size, num_classes=10
    )
    net.load_state_dict(sd)
    return evaluate_model(net, data.x_test, data.y_test)[1]


def perm_codec(
    plan: permcodec.Plan | None, bits: int | None, approximate: bool = False
) -> Callable[[dict[str, torch.Tensor], list[str]], tuple[dict[str, torch.Tensor], int]]:
    seed = APPROX_SEED
    """permcodec as a codec with the baselines' interface (bits of the weight tensors)."""

    def codec(sd: dict[str, torch.Tensor], names: list[str]) -> tuple[dict, int]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.perm"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", permcodec.LossyWarning)
                permcodec.save(sd, path, plan=plan, bits=bits, approximate=approximate, seed=seed)
            with permcodec.open(path) as pf:
                other = sum(e["length"] for e in pf.header["tensors"] if e["name"] not in names)
                size = path.stat().st_size
            return permcodec.load(path), 8 * (size - other)

    return codec


def variants(model: str, trained: dict[str, tuple]) -> Iterator[tuple[str, str, Callable]]:
    """(trained label, method, codec) of every point measured for ``model``."""
    for label, (_, plan, _) in trained.items():
        if label == "adam":
            yield label, "float32 (raw)", None
            for name, codec in baselines.BASELINES.items():
                if name.startswith("nncodec") and baselines.NNCODEC_ERROR:
                    continue
                yield label, name, codec
            for b in APPROX_BITS:
                yield label, f"permcodec approximate {b} bits", perm_codec(None, b, True)
        elif label == "laperm":
            yield label, "permcodec lossless", perm_codec(plan, None)
            for b in POST_HOC_BITS:
                yield label, f"permcodec {b} bits (post hoc)", perm_codec(plan, b)
        elif "bits=" in label:
            b = int(label.split("bits=")[1])
            yield label, f"permcodec {b} bits", perm_codec(plan, b)
        else:
            yield label, "permcodec lossless", perm_codec(plan, None)


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    data = load_dataset("fashion-mnist", args.data_dir)
    out_jsonl = args.out / "rate_distortion.jsonl"
    done = {}
    if out_jsonl.exists():
        for line in out_jsonl.read_text().splitlines():
            r = json.loads(line)
            done[r["key"]] = r
    records = []
    for model in args.models:
        trained = {}
        for label, over in TRAINED[model].items():
            trained[label] = train_cached(model, label, over, args, data)
            print(f"{model} {label}: trained, {trained[label][2]:.2f}%", flush=True)
        for label, method, codec in variants(model, trained):
            epochs = epochs_for(args, model)
            key = f"{model}|{label}|{method}|seed={args.seed}|epochs={epochs}"
            if key in done:
                records.append(done[key])
                continue
            sd, _, trained_acc = trained[label]
            names = weight_names(sd)
            t0 = time.perf_counter()
            if codec is None:
                decoded, bits = sd, 32 * weight_count(sd)
            else:
                decoded, bits = codec(sd, names)
            rel = _rel_error(sd, decoded, names)
            rec = {
                "key": key,
                "model": model,
                "trained": label,
                "method": method,
                "trained_acc": trained_acc,
                "test_acc": accuracy(model, decoded, data),
                "bits_per_weight": bits / weight_count(sd),
                "rel_error": rel,
                "seconds": time.perf_counter() - t0,
                "seed": args.seed,
                "epochs": epochs,
            }
            print(
                f"{model:9} {label:30} {method:34} {rec['bits_per_weight']:7.3f} b/w "
                f"{rec['test_acc']:6.2f}%  err {rel:.4f}",
                flush=True,
            )
            with out_jsonl.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            records.append(rec)
    return records


def _rel_error(sd: dict, decoded: dict, names: list[str]) -> float:
    num = sum(float((sd[k].double() - decoded[k].double()).pow(2).sum()) for k in names)
    den = sum(float(sd[k].double().pow(2).sum()) for k in names)
    return (num / den) ** 0.5 if den else 0.0


def table(records: list[dict[str, Any]], model: str) -> str:
    rows = sorted((r for r in records if r["model"] == model), key=lambda r: r["bits_per_weight"])
    lines = [
        f"**{model}** (Fashion-MNIST, seed {rows[0]['seed']}, {rows[0]['epochs']} epochs)",
        "",
        "| trained | method | bits/weight | test acc % | rel. L2 error |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['trained']} | {r['method']} | {r['bits_per_weight']:.3f} | "
            f"{r['test_acc']:.2f} | {r['rel_error']:.4f} |"
        )
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], models: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = [r for r in records if r["model"] == model]
        families = {
            "permcodec (LaPerm-trained)": lambda r: (
                r["method"].startswith("permcodec") and r["trained"] != "adam"
            ),
            "permcodec approximate (Adam model)": lambda r: "approximate" in r["method"],
            "NNCodec (Adam model)": lambda r: r["method"].startswith("nncodec"),
            "quantization / float (Adam model)": lambda r: (
                r["trained"] == "adam" and not r["method"].startswith(("nncodec", "permcodec"))
            ),
        }
        for (label, pick), marker in zip(families.items(), "osD^", strict=True):
            pts = sorted((r["bits_per_weight"], r["test_acc"]) for r in rows if pick(r))
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, marker=marker, linestyle="-" if "NNCodec" in label else "")
                ax.lines[-1].set_label(label)
        adam = [r for r in rows if r["method"] == "float32 (raw)"]
        if adam:
            ax.axhline(adam[0]["test_acc"], color="grey", lw=0.8, ls="--")
            ax.axhline(adam[0]["test_acc"] - 1, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bits per weight (weight matrices)")
        ax.set_ylabel("test accuracy %")
        ax.set_title(model)
        lo = min((r["test_acc"] for r in rows), default=0)
        ax.set_ylim(max(lo - 1, 50), None)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(EPOCHS))
    ap.add_argument("--epochs", type=int, default=None, help="for every model (default: EPOCHS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS, help="Folder for results and cache.")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in TRAINED]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(TRAINED)}")
    torch.set_num_threads(args.threads)
    if baselines.NNCODEC_ERROR:
        print(f"NNCodec skipped: {baselines.NNCODEC_ERROR}", flush=True)
    records = measure(args)
    text = "\n\n".join(table(records, m) for m in args.models)
    print(text)
    stem = args.out / f"rate_distortion_{'_'.join(args.models)}"
    stem.with_suffix(".md").write_text(text + "\n")
    stem.with_suffix(".json").write_text(json.dumps(records, indent=1))
    plot(records, args.models, stem.with_suffix(".png"))
    print(f"wrote {stem}.md, .json, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
