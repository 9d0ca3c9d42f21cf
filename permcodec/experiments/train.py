"""Training runs for the command line and the experiments: LaPerm or a plain baseline.

One function, :func:`run`, builds model and data from a :class:`TrainConfig`, seeds the
model with :func:`permcodec.init`, trains, and writes the `.perm` file with a JSON-lines
log and a PNG of the curves beside it. The task is image classification, or next-byte
prediction for the language models (``lm-*``, :mod:`permcodec.experiments.lm`), each
with its own defaults. :func:`evaluate` measures a `.perm` file again (test accuracy, or
validation loss) by rebuilding its model from the file's metadata.
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
from ..format.container import MAGIC
from ..format.reader import PermFile
from ..laperm import LaPerm
from ..torch import default_targets, device_of, init, load, save
from ..torch.calibrate import loss_increase
from .data import Dataset, batches, load_dataset
from .lm import TextTask, bits_per_byte, evaluate_lm, warmup_cosine
from .models import LANGUAGE_MODELS, build_lm, build_model, is_language_model
from .text import TextData, load_text

EVAL_BATCH = 1000
#: Gradient-norm clip of language model runs.
CLIP = 1.0


def cosine(total: int) -> Callable[[int], float]:
    """The learning-rate factor at each step: a cosine from 1 down to 0 at the last."""
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


#: Learning-rate schedules by name: step count of the run -> factor at each step.
SCHEDULES: dict[str, Callable[[int], Callable[[int], float]]] = {
    "constant": lambda total: lambda step: 1.0,
    "cosine": cosine,
    "warmup-cosine": warmup_cosine,
}


#: Defaults of each task for the fields a config leaves at None. Language models: AdamW
#: at 6e-3 with decay 0.1 under a warmup-and-cosine schedule, gradients clipped at 1,
#: Xavier-normal inits and k = 50 (the transformer experiments' choice, docs/experiments.md).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "image": dict(dataset="digits", batch_size=128, optimizer="adam", lr=1e-3,
                  weight_decay=0.0, sync_period=20, init="he_uniform", schedule="constant"),
    "lm": dict(dataset="python-stdlib", batch_size=16, optimizer="adamw", lr=6e-3,
               weight_decay=0.1, sync_period=50, init="xavier_normal",
               schedule="warmup-cosine"),
}  # fmt: skip


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in the output's metadata).
    Fields left at None take their task's default (:data:`TASK_DEFAULTS`)."""

    model: str = "lenet300"
    dataset: str | None = None
    data_dir: str | None = None
    epochs: int = 10
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    sync_period: int | None = None
    #: The learning rate over the run (:data:`SCHEDULES`), for LaPerm and baseline alike.
    schedule: str | None = None
    init: str | None = None
    density: float | None = None
    min_row: int = 0
    bits: int | None = None
    bpw: float | None = None
    #: How ``bpw`` weighs each matrix's distortion (``init``'s ``sensitivity``): "weights"
    #: (every weight alike: about one rate for all) or "rows" (longer rows get fewer bits).
    allocation: str = "weights"
    biases: bool = False
    seed: int = 0
    baseline: bool = False
    device: str = "cpu"
    #: Seed only the matrices whose names contain one of these comma-separated parts
    #: (e.g. "self_attn" or "linear1,linear2"); the rest train freely and are stored as is.
    seeded: str | None = None

    @property
    def task(self) -> str:
        return "lm" if is_language_model(self.model) else "image"

    def resolved(self) -> TrainConfig:
        """This config with every None field set to its task's default."""
        given = {k: v for k, v in asdict(self).items() if v is not None}
        return TrainConfig(**{**TASK_DEFAULTS[self.task], **given})


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
    final_test_loss: float = math.nan
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


class ImageTask:
    """Image classification: an epoch of shuffled minibatches, test accuracy."""

    def __init__(self, data: Dataset, batch_size: int, seed: int) -> None:
        self.data, self.batch_size = data, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.steps_per_epoch = math.ceil(len(data.y_train) / batch_size)

    def batches(self) -> Any:
        d = self.data
        return batches(
            d.x_train, d.y_train, self.batch_size, shuffle=True, generator=self.generator
        )

    @staticmethod
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    @staticmethod
    def correct(out: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
        return int((out.argmax(1) == y).sum()), len(y)

    def evaluate(self, model: nn.Module, device: str = "cpu") -> tuple[float, float]:
        return evaluate_model(model, self.data.x_test, self.data.y_test, device)


Task = ImageTask | TextTask
Data = Dataset | TextData


def load_data(cfg: TrainConfig) -> Data:
    """The dataset (or corpus) of a config."""
    cfg = cfg.resolved()
    if cfg.task == "lm":
        return load_text(cfg.dataset, cfg.data_dir)
    return load_dataset(cfg.dataset, cfg.data_dir)


def make_task(cfg: TrainConfig, data: Data) -> Task:
    if isinstance(data, TextData):
        return TextTask(data, LANGUAGE_MODELS[cfg.model][-1], cfg.batch_size, cfg.seed)
    return ImageTask(data, cfg.batch_size, cfg.seed)


def build(cfg: TrainConfig, data: Data) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Model seeded from ``cfg.seed`` and its optimizer (LaPerm unless baseline)."""
    cfg = cfg.resolved()
    device_of(cfg.device)  # a device that is not there fails here, in one line
    torch.manual_seed(cfg.seed)  # for what permcodec does not seed: biases, norm layers
    if cfg.task == "lm":
        model = build_lm(cfg.model).to(cfg.device)
    else:
        model = build_model(
            cfg.model,
            in_channels=data.in_channels,
            image_size=data.image_size,
            num_classes=data.num_classes,
        ).to(cfg.device)
    if cfg.bpw is not None:
        init(model, cfg.seed, bpw=cfg.bpw, sensitivity=cfg.allocation)
    else:
        parts = [p for p in (cfg.seeded or "").split(",") if p]
        left_out = {
            name: None
            for name, _, _ in default_targets(model, cfg.biases)
            if parts and not any(part in name for part in parts)
        }
        init(
            model,
            cfg.seed,
            parse_spec(cfg.init),
            biases=cfg.biases,
            density=cfg.density,
            min_row=cfg.min_row,
            overrides=left_out,
        )
    inner = make_optimizer(model, cfg)
    if cfg.baseline:
        return model, inner
    schedule = "step" if cfg.task == "lm" else "epoch"
    return model, LaPerm(
        model, inner, sync_period=cfg.sync_period, bits=cfg.bits, schedule_by=schedule
    )


def run(
    cfg: TrainConfig,
    output: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    data: Data | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> TrainResult:
    """Train as configured; write ``output`` (.perm, or .pt for a baseline), its
    ``.jsonl`` log and ``.png`` curves when ``output`` is given. For a language model
    ``test_*`` are the validation loss and next-byte accuracy."""
    cfg = cfg.resolved()
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; known: {', '.join(SCHEDULES)}")
    data = data if data is not None else load_data(cfg)
    model, opt = build(cfg, data)
    task = make_task(cfg, data)
    lm = cfg.task == "lm"
    sched = None
    if cfg.schedule != "constant":  # the same schedule for LaPerm and for its baseline
        factor = SCHEDULES[cfg.schedule](cfg.epochs * task.steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    result = TrainResult(cfg)
    out = Path(output) if output is not None else None
    log_path = out.with_suffix(".jsonl") if out is not None else None
    bar = _progress(cfg.epochs * task.steps_per_epoch, progress)
    laperm = isinstance(opt, LaPerm)
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        if laperm:
            opt.set_epoch(epoch)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for xb, yb in task.batches():
            xb, yb = xb.to(cfg.device), yb.to(cfg.device)
            opt.zero_grad()
            outp = model(xb)
            loss = task.loss(outp, yb)
            loss.backward()
            if lm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()
            if sched is not None:
                sched.step()
            hit, n = task.correct(outp, yb)
            loss_sum += loss.item() * n
            correct += hit
            seen += n
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    epoch=epoch + 1,
                    loss=f"{loss_sum / seen:.3f}",
                    acc=f"{100 * correct / seen:.1f}",
                )
        seconds = time.perf_counter() - t0
        with opt.synced() if laperm else contextlib.nullcontext():
            test_loss, test_acc = task.evaluate(model, cfg.device)
        fast_acc = test_acc
        if laperm and not opt.in_sync:
            fast_acc = task.evaluate(model, cfg.device)[1]
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
    if laperm:
        opt.sync()  # the stored model is exactly a permutation of its init
    result.final_test_loss, result.final_test_acc = task.evaluate(model, cfg.device)
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


def model_metadata(cfg: TrainConfig, data: Data, result: TrainResult) -> dict[str, str]:
    """What `permcodec evaluate` needs to rebuild the model, plus the run's record."""
    meta = {"model": cfg.model, "task": cfg.task, "dataset": cfg.dataset}
    if isinstance(data, TextData):
        meta["val_loss"] = f"{result.final_test_loss:.6f}"
        meta["bits_per_byte"] = f"{bits_per_byte(result.final_test_loss):.6f}"
    else:
        meta.update(
            in_channels=str(data.in_channels),
            image_size=str(data.image_size),
            num_classes=str(data.num_classes),
            test_acc=f"{result.final_test_acc:.4f}",
        )
    meta["train_config"] = json.dumps(asdict(cfg), sort_keys=True)
    return meta


def _write_outputs(
    model: nn.Module, cfg: TrainConfig, data: Data, result: TrainResult, out: Path
) -> None:
    meta = model_metadata(cfg, data, result)
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
    """Measure the model stored in a file written by :func:`run` again (a `.perm` file,
    or a baseline's `.pt`): its test accuracy (%), or for a language model its validation
    loss (nats per byte)."""
    device_of(device)
    model, meta = rebuild(path, device, max_bytes)
    if meta.get("task") == "lm":
        data = load_text(dataset or meta.get("dataset", "python-stdlib"), data_dir)
        context = LANGUAGE_MODELS[meta["model"]][-1]
        return evaluate_lm(model, data, context, device)[0], meta
    data = load_dataset(dataset or meta.get("dataset", "digits"), data_dir)
    return evaluate_model(model, data.x_test, data.y_test, device)[1], meta


def calibration_loss(
    path: str | os.PathLike[str],
    examples: int,
    data_dir: str | None = None,
    max_bytes: int | None = None,
) -> Callable[[str, Any], float]:
    """The measured loss of :func:`permcodec.format.recode.plan_depths` for the image
    classifier a `.perm` file written by :func:`run` holds: the rise of its loss on the
    first ``examples`` training examples of the dataset it was trained on."""
    with PermFile(path, max_bytes=max_bytes) as pf:
        if pf.metadata().get("task") == "lm":
            raise PermcodecError(f"{path} holds a language model; calibration measures classifiers")
    model, meta = rebuild(path, "cpu", max_bytes)
    data = load_dataset(meta.get("dataset", "digits"), data_dir)
    x, y = data.x_train[:examples], data.y_train[:examples]
    return loss_increase(model, batches(x, y, 256, shuffle=False))


def rebuild(
    path: str | os.PathLike[str], device: str = "cpu", max_bytes: int | None = None
) -> tuple[nn.Module, dict[str, str]]:
    """The model a file written by :func:`run` holds, loaded, and its metadata: a `.perm`
    file, or the `.pt` checkpoint of a baseline run."""
    baseline = _baseline_checkpoint(path)
    if baseline is None:
        with PermFile(path, max_bytes=max_bytes) as pf:
            meta = pf.metadata()
    else:
        meta = baseline["metadata"]
    if meta.get("task") == "lm" and meta.get("model") in LANGUAGE_MODELS:
        model: nn.Module = build_lm(meta["model"])
    else:
        need = ("model", "in_channels", "image_size", "num_classes")
        missing = [k for k in need if k not in meta]
        if missing:
            raise PermcodecError(
                f"{path} does not record its model ({', '.join(missing)} missing); "
                "it was not written by `permcodec train`"
            )
        model = build_model(
            meta["model"],
            in_channels=int(meta["in_channels"]),
            image_size=int(meta["image_size"]),
            num_classes=int(meta["num_classes"]),
        )
    model = model.to(device)
    if baseline is None:
        load(path, model=model, device=device, max_bytes=max_bytes)
    else:
        model.load_state_dict(baseline["state_dict"])
    return model, meta


def _baseline_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The checkpoint a baseline run wrote (``{"state_dict", "metadata"}``, read with
    ``weights_only=True``), or None for a `.perm` file (or anything else, which the
    `.perm` reader then refuses)."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) == MAGIC:
            return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file: the .perm reader says what it is not
        return None
    if isinstance(ckpt, dict) and {"state_dict", "metadata"} <= set(ckpt):
        return ckpt
    raise PermcodecError(
        f"{path} is a torch checkpoint but not one `permcodec train --baseline` wrote"
    )
