"""Training runs for the command line and the experiments: LaPerm or a plain baseline.

One function, :func:`run`, builds model and data from a :class:`TrainConfig`, seeds the
model with :func:`permcodec.init`, trains, and writes the `.perm` file with a JSON-lines
log and a PNG of the curves beside it. :func:`evaluate` measures a `.perm` file's test
accuracy by rebuilding its model from the file's metadata.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.initializers import parse_spec
from ..errors import MissingDependencyError, PermcodecError, require
from ..format.atomic import atomic_path
from ..format.reader import PermFile
from ..laperm import LaPerm
from ..torch import device_of, init, load, save
from .data import Dataset, batches, load_dataset
from .models import build_model

EVAL_BATCH = 1000


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in the output's metadata)."""

    model: str = "lenet300"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    sync_period: int = 20
    init: str = "he_uniform"
    density: float | None = None
    min_row: int = 0
    bits: int | None = None
    bpw: float | None = None
    biases: bool = False
    seed: int = 0
    baseline: bool = False
    device: str = "cpu"


@dataclass
class EpochLog:
    """One epoch. ``test_*`` is measured on the model as stored (for LaPerm: synced);
    ``fast_test_acc`` on the weights being trained (they differ between syncs)."""

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float
    syncs: int = 0
    fast_test_acc: float = math.nan


@dataclass
class TrainResult:
    config: TrainConfig
    epochs: list[EpochLog] = field(default_factory=list)
    final_test_acc: float = math.nan
    output: Path | None = None
    seconds_per_epoch: float = math.nan
    #: What the run could not do but did not fail for (e.g. the plot, without matplotlib).
    notes: list[str] = field(default_factory=list)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The inner optimizer named by the config."""
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise PermcodecError(f"unknown optimizer {cfg.optimizer!r}; use adam, adamw or sgd")


@torch.no_grad()
def evaluate_model(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str = "cpu"
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in %) of ``model`` on a test set, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for xb, yb in batches(x, y, EVAL_BATCH, shuffle=False, generator=None):
        out = model(xb.to(device))
        loss_sum += F.cross_entropy(out, yb.to(device), reduction="sum").item()
        correct += (out.argmax(1).cpu() == yb).sum().item()
    model.train(was_training)
    n = max(len(y), 1)
    return loss_sum / n, 100.0 * correct / n


def build(cfg: TrainConfig, data: Dataset) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Model seeded from ``cfg.seed`` and its optimizer (LaPerm unless baseline)."""
    device_of(cfg.device)  # a device that is not there fails here, in one line
    torch.manual_seed(cfg.seed)  # for what permcodec does not seed: biases, norm layers
    model = build_model(
        cfg.model,
        in_channels=data.in_channels,
        image_size=data.image_size,
        num_classes=data.num_classes,
    ).to(cfg.device)
    if cfg.bpw is not None:
        init(model, cfg.seed, bpw=cfg.bpw)
    else:
        init(
            model,
            cfg.seed,
            parse_spec(cfg.init),
            biases=cfg.biases,
            density=cfg.density,
            min_row=cfg.min_row,
        )
    inner = make_optimizer(model, cfg)
    if cfg.baseline:
        return model, inner
    return model, LaPerm(model, inner, sync_period=cfg.sync_period, bits=cfg.bits)


def run(
    cfg: TrainConfig,
    output: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    data: Dataset | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> TrainResult:
    """Train as configured; write ``output`` (.perm, or .pt for a baseline), its
    ``.jsonl`` log and ``.png`` curves when ``output`` is given."""
    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    model, opt = build(cfg, data)
    gen = torch.Generator().manual_seed(cfg.seed)
    result = TrainResult(cfg)
    out = Path(output) if output is not None else None
    log_path = out.with_suffix(".jsonl") if out is not None else None
    steps_per_epoch = math.ceil(len(data.y_train) / cfg.batch_size)
    bar = _progress(cfg.epochs * steps_per_epoch, progress)
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        if isinstance(opt, LaPerm):
            opt.set_epoch(epoch)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for xb, yb in batches(
            data.x_train, data.y_train, cfg.batch_size, shuffle=True, generator=gen
        ):
            xb, yb = xb.to(cfg.device), yb.to(cfg.device)
            opt.zero_grad()
            outp = model(xb)
            loss = F.cross_entropy(outp, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(yb)
            correct += (outp.argmax(1) == yb).sum().item()
            seen += len(yb)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    epoch=epoch + 1,
                    loss=f"{loss_sum / seen:.3f}",
                    acc=f"{100 * correct / seen:.1f}",
                )
        seconds = time.perf_counter() - t0
        laperm = isinstance(opt, LaPerm)
        with opt.synced() if laperm else contextlib.nullcontext():
            test_loss, test_acc = evaluate_model(model, data.x_test, data.y_test, cfg.device)
        fast_acc = test_acc
        if laperm and not opt.in_sync:
            fast_acc = evaluate_model(model, data.x_test, data.y_test, cfg.device)[1]
        entry = EpochLog(
            epoch + 1,
            loss_sum / seen,
            100 * correct / seen,
            test_loss,
            test_acc,
            seconds,
            opt.syncs if laperm else 0,
            fast_acc,
        )
        result.epochs.append(entry)
        if log_path is not None:  # a line per finished epoch: never an empty log
            with log_path.open("w" if epoch == 0 else "a") as f:
                f.write(json.dumps(asdict(entry)) + "\n")
        if on_epoch is not None:
            on_epoch(entry)
    if bar is not None:
        bar.close()
    if isinstance(opt, LaPerm):
        opt.sync()  # the stored model is exactly a permutation of its init
    _, result.final_test_acc = evaluate_model(model, data.x_test, data.y_test, cfg.device)
    result.seconds_per_epoch = sum(e.seconds for e in result.epochs) / max(len(result.epochs), 1)
    if out is not None:
        _write_outputs(model, cfg, data, result, out)
    return result


def _progress(total: int, enabled: bool) -> Any:
    """A tqdm bar, or None (asked for none, or tqdm is not installed: a bar is optional)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", dynamic_ncols=True)


def model_metadata(cfg: TrainConfig, data: Dataset, final_test_acc: float) -> dict[str, str]:
    """What `permcodec evaluate` needs to rebuild the model, plus the run's record."""
    return {
        "model": cfg.model,
        "in_channels": str(data.in_channels),
        "image_size": str(data.image_size),
        "num_classes": str(data.num_classes),
        "dataset": cfg.dataset,
        "test_acc": f"{final_test_acc:.4f}",
        "train_config": json.dumps(asdict(cfg), sort_keys=True),
    }


def _write_outputs(
    model: nn.Module, cfg: TrainConfig, data: Dataset, result: TrainResult, out: Path
) -> None:
    meta = model_metadata(cfg, data, result.final_test_acc)
    if cfg.baseline:
        out = out.with_suffix(".pt")
        with atomic_path(out) as tmp:
            torch.save({"state_dict": model.state_dict(), "metadata": meta}, tmp)
    else:
        save(model, out, metadata=meta)
    result.output = out
    try:  # the model is written: a missing plotting library only costs the plot
        plot_curves(result, out.with_suffix(".png"))
    except MissingDependencyError as e:
        result.notes.append(f"no plot: {e}")


def plot_curves(result: TrainResult, path: Path) -> None:
    """Loss and accuracy per epoch, train and test, as a PNG."""
    matplotlib = require("matplotlib", "the plot of the training curves", extra="train")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [e.epoch for e in result.epochs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [e.train_loss for e in result.epochs], label="train")
    a1.plot(ep, [e.test_loss for e in result.epochs], label="test")
    a1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    a2.plot(ep, [e.train_acc for e in result.epochs], label="train")
    a2.plot(ep, [e.test_acc for e in result.epochs], label="test")
    a2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend()
    c = result.config
    kind = "baseline " + c.optimizer if c.baseline else f"LaPerm k={c.sync_period} ({c.optimizer})"
    fig.suptitle(f"{c.model} on {c.dataset}, {kind}, seed {c.seed}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def evaluate(
    path: str | os.PathLike[str],
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    max_bytes: int | None = None,
) -> tuple[float, dict[str, str]]:
    """Test accuracy (%) of the model stored in a `.perm` file written by :func:`run`."""
    device_of(device)
    with PermFile(path, max_bytes=max_bytes) as pf:
        meta = pf.metadata
    missing = [k for k in ("model", "in_channels", "image_size", "num_classes") if k not in meta]
    if missing:
        raise PermcodecError(
            f"{path} does not record its model ({', '.join(missing)} missing); "
            "it was not written by `permcodec train`"
        )
    data = load_dataset(dataset or meta.get("dataset", "digits"), data_dir)
    model = build_model(
        meta["model"],
        in_channels=int(meta["in_channels"]),
        image_size=int(meta["image_size"]),
        num_classes=int(meta["num_classes"]),
    ).to(device)
    load(path, model=model, device=device, max_bytes=max_bytes)
    return evaluate_model(model, data.x_test, data.y_test, device)[1], meta
