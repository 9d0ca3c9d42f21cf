"""Quantization-aware training: the peers a user who can retrain would pick instead of
training by permutation, for the rate-distortion table.

Each peer trains the same network as Adam does (the same builder, seed, data order,
Adam 1e-3, batch 128, epochs: ``permcodec.experiments.train.run`` with its weights
quantized in the forward pass, gradients passed straight through), then stores every
quantized weight matrix on its own grid with permcodec's ``grid-rans`` coder: the grid
indices entropy-coded by rANS with static tables and the context of the previous index
(``permcodec.coding.grid_fit.exact_grid``), lossless, in the same container as
permcodec's files. Matrices whose rows hold fewer than 32 values stay float32, as
permcodec leaves them unseeded.

* ``twn t=T``: ternary weights (TWN, Li et al. 2016): per row, the values with
  ``|w| > T * mean|w|`` become ``sign(w) * alpha``, ``alpha`` the mean of their
  magnitudes (rounded to float16, stored as the row's step); the rest 0. ``T`` sets the
  sparsity and so the rate (TWN's own choice is 0.7).
* ``lsq bits=B``: B-bit integers times a learned step per row (LSQ, Esser et al. 2020,
  per output channel): ``clamp(round(w / s), -2^(B-1), 2^(B-1) - 1) * s``, ``s``
  initialized at ``2 mean|w| / sqrt(2^(B-1) - 1)`` and trained with LSQ's gradient
  scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from permcodec.coding.grid_fit import exact_grid
from permcodec.experiments import train as train_mod
from permcodec.format.posthoc import write_grids

#: Rows shorter than this stay float32 (permcodec's MIN_ROW for rate control).
MIN_ROW = 32


class Ternary(nn.Module):
    """TWN: per row, sign(w) * alpha where |w| > t * mean|w|, else 0."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def steps(self, w: torch.Tensor) -> torch.Tensor:
        rows = w.detach().flatten(1).abs()
        keep = rows > self.t * rows.mean(dim=1, keepdim=True)
        kept = keep.sum(dim=1).clamp(min=1)
        alpha = (rows * keep).sum(dim=1) / kept
        alpha = alpha.clamp(min=2.0**-14).half().float()  # a float16 scale per row
        return alpha

    @torch.no_grad()
    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        """The stored values: exactly q * alpha, q in {-1, 0, 1} (+0.0 for zero)."""
        rows = w.flatten(1)
        keep = rows.abs() > self.t * rows.abs().mean(dim=1, keepdim=True)
        q = torch.sign(rows) * keep + 0.0
        return (q * self.steps(w)[:, None]).reshape(w.shape)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (self.quantize(w) - w).detach()  # straight through


class LearnedStep(nn.Module):
    """LSQ per row: clamp(round(w / s), -qn, qp) * s with s learned."""

    def __init__(self, w: torch.Tensor, bits: int) -> None:
        super().__init__()
        self.qn, self.qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
        rows = w.detach().flatten(1)
        init = 2 * rows.abs().mean(dim=1) / math.sqrt(max(self.qp, 1))
        self.step = nn.Parameter(init.clamp(min=1e-8))
        self.grad_scale = 1.0 / math.sqrt(rows.shape[1] * max(self.qp, 1))

    def steps(self, w: torch.Tensor) -> torch.Tensor:
        return self.step.detach().abs().clamp(min=1e-8)

    @torch.no_grad()
    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        """The stored values: exactly q * s, q an integer in [-qn, qp]."""
        s = self.steps(w)[:, None]
        q = torch.round((w.flatten(1) / s).clamp(-self.qn, self.qp)) + 0.0
        return (q * s).reshape(w.shape)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        rows = w.flatten(1)
        s = self.step.abs().clamp(min=1e-8)
        s = (s - s * self.grad_scale).detach() + s * self.grad_scale  # LSQ's gradient scale
        x = (rows / s[:, None]).clamp(-self.qn, self.qp)
        q = x + (torch.round(x) - x).detach() + 0.0
        return (q * s[:, None]).reshape(w.shape)


def quantizer(method: str, w: torch.Tensor) -> nn.Module:
    """The parametrization of a ``twn t=T`` or ``lsq bits=B`` peer for weight ``w``."""
    kind, arg = method.split()
    value = float(arg.split("=")[1])
    return Ternary(value) if kind == "twn" else LearnedStep(w, int(value))


def quantized_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every Linear and Conv layer whose rows hold >= MIN_ROW values."""
    for name, mod in model.named_modules():
        layer = isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d))
        if layer and mod.weight[0].numel() >= MIN_ROW:
            yield name, mod


@contextmanager
def quantization_aware(method: str) -> Iterator[dict[str, Any]]:
    """While active, ``train.run`` with ``baseline=True`` trains ``method``'s model; the
    model it trained is in the yielded dict under "model" (its weights quantized)."""
    holder: dict[str, Any] = {}
    real_build = train_mod.build

    def build(cfg: Any, data: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
        model, _ = real_build(cfg, data)
        for _, mod in quantized_layers(model):
            parametrize.register_parametrization(mod, "weight", quantizer(method, mod.weight))
        holder["model"] = model
        return model, train_mod.make_optimizer(model, cfg)

    with mock.patch.object(train_mod, "build", build):
        yield holder


def freeze(model: nn.Module) -> dict[str, np.ndarray]:
    """Replace each quantized weight by its quantized value; return each one's row steps
    (float32), by parameter name."""
    steps = {}
    for name, mod in list(quantized_layers(model)):
        if parametrize.is_parametrized(mod, "weight"):
            quant = mod.parametrizations.weight[0]
            latent = mod.parametrizations.weight.original.detach()
            steps[f"{name}.weight" if name else "weight"] = quant.steps(latent).numpy().copy()
            values = quant.quantize(latent)
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
            with torch.no_grad():
                mod.weight.copy_(values)
    return steps


def train_peer(cfg: Any, method: str, out: Path, data: Any) -> float:
    """Train ``method`` as ``cfg`` (a baseline config) says; write the quantized model
    to ``out`` (.pt, with its steps) and return its final test accuracy."""
    with quantization_aware(method) as holder:
        last = cfg.epochs

        def on_epoch(entry: Any) -> None:
            if entry.epoch == last:  # before the final evaluation and the checkpoint
                holder["steps"] = freeze(holder["model"])

        result = train_mod.run(cfg, out, progress=False, data=data, on_epoch=on_epoch)
    torch.save(holder["steps"], out.with_suffix(".steps.pt"))
    return result.final_test_acc


def peer_file(pt: Path, path: Path) -> dict[str, torch.Tensor]:
    """Write a trained peer's weights as a `.perm` file (its quantized matrices on their
    grids, coded by rANS; the rest exact) and return its state dict."""
    sd = torch.load(pt, weights_only=True)["state_dict"]
    steps = torch.load(pt.with_suffix(".steps.pt"), weights_only=False)
    items = [(k, v.numpy(), "float32") for k, v in sd.items()]
    grids = {k: exact_grid(sd[k].numpy(), "float32", s) for k, s in steps.items()}
    write_grids(path, items, {"note": "quantization-aware peer"}, grids)
    return sd
