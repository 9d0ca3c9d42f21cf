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
* ``ternary p=P``: ternary weights at a set density: per row, the ``ceil(P m)`` values
  of largest magnitude become ``sign(w) * alpha`` (``alpha`` as for TWN), the rest 0.
  TWN's threshold sets the density only indirectly, and at ``T >= 2`` a uniform row
  (the init every model here starts from) keeps no value at all, so a network starts
  dead and often stays so; choosing the density, as permcodec's forms do, is how a user
  gets a sparse ternary peer that trains.
* ``ttq t=T``: trained ternary quantization (TTQ, Zhu et al. 2017): per layer, the
  values with ``|w| > T * max|w|`` become ``+Wp`` or ``-Wn``, two scales learned by
  gradient (started at the mean magnitude of each side), the rest 0; the latent
  weights' gradient scaled by ``Wp``, 1 or ``Wn`` as TTQ does. ``-Wn``, 0 and ``+Wp``
  are not one grid, so the file stores each matrix's ternary indices on the grid of
  step 1 (rANS) and the two scales beside them as a 1x2 float32 matrix, counted with
  the weights; decoding multiplies them back, exactly.
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
#: Where freeze() puts TTQ's scales, and the suffix of their matrix in a peer's file.
TTQ_KEY, SCALES_SUFFIX = "ttq scales", ".ttq_scales"


class Ternary(nn.Module):
    """TWN: per row, sign(w) * alpha where |w| > t * mean|w|, else 0."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def keep(self, w: torch.Tensor) -> torch.Tensor:
        """Which values of each row (flattened) are nonzero."""
        rows = w.detach().flatten(1).abs()
        return rows > self.t * rows.mean(dim=1, keepdim=True)

    def steps(self, w: torch.Tensor) -> torch.Tensor:
        return self._alpha(w, self.keep(w))

    @staticmethod
    def _alpha(w: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Each row's scale: the mean magnitude of its kept values, as a float16."""
        rows = w.detach().flatten(1).abs()
        alpha = (rows * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
        return alpha.clamp(min=2.0**-14).half().float()

    @torch.no_grad()
    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        """The stored values: exactly q * alpha, q in {-1, 0, 1} (+0.0 for zero)."""
        keep = self.keep(w)  # once: the density peer's top-k is the costly part
        q = torch.sign(w.flatten(1)) * keep + 0.0
        return (q * self._alpha(w, keep)[:, None]).reshape(w.shape)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (self.quantize(w) - w).detach()  # straight through


class TernaryDensity(Ternary):
    """Ternary at density p: per row, the ceil(p m) largest |w| become sign(w) * alpha."""

    def __init__(self, p: float) -> None:
        super().__init__(0.0)
        self.p = p

    def keep(self, w: torch.Tensor) -> torch.Tensor:
        rows = w.detach().flatten(1).abs()
        k = max(1, math.ceil(self.p * rows.shape[1]))
        cut = torch.topk(rows, k, dim=1).values[:, -1:]
        return rows >= cut


class TrainedTernary(nn.Module):
    """TTQ per layer: +Wp where w > t max|w|, -Wn where w < -t max|w|, else 0."""

    def __init__(self, w: torch.Tensor, t: float) -> None:
        super().__init__()
        self.t = t
        pos, neg = self.sides(w.detach())
        a = w.detach().abs()
        self.wp = nn.Parameter((a * pos).sum() / pos.sum().clamp(min=1))
        self.wn = nn.Parameter((a * neg).sum() / neg.sum().clamp(min=1))

    def sides(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cut = self.t * w.detach().abs().max()
        return (w.detach() > cut).float(), (w.detach() < -cut).float()

    def scales(self) -> np.ndarray:
        """(Wp, Wn) as float32: the values a decoder multiplies the indices by."""
        return torch.stack([self.wp, self.wn]).detach().abs().float().numpy().copy()

    @torch.no_grad()
    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        pos, neg = self.sides(w)
        return rebuild_ternary(pos - neg, self.wp.detach().abs(), self.wn.detach().abs())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        pos, neg = self.sides(w)
        q = self.wp.abs() * pos - self.wn.abs() * neg
        c = (self.wp.abs() * pos + (1 - pos - neg) + self.wn.abs() * neg).detach()
        return q + (c * w - (c * w).detach())  # TTQ's scaled straight-through gradient


def rebuild_ternary(index: torch.Tensor, wp: torch.Tensor, wn: torch.Tensor) -> torch.Tensor:
    """TTQ's values from their indices in {-1, 0, 1}: exactly what training showed."""
    zero = torch.zeros((), dtype=torch.float32)
    return torch.where(index > 0, wp.float(), torch.where(index < 0, -wn.float(), zero)) + 0.0


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
    """The parametrization of a ``twn t=T``, ``ternary p=P``, ``ttq t=T`` or ``lsq
    bits=B`` peer for weight ``w``."""
    kind, arg = method.split()
    value = float(arg.split("=")[1])
    if kind == "twn":
        return Ternary(value)
    if kind == "ternary":
        return TernaryDensity(value)
    if kind == "ttq":
        return TrainedTernary(w, value)
    return LearnedStep(w, int(value))


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
    (float32; for TTQ its two scales, under ``TTQ_KEY``), by parameter name."""
    steps: dict[str, Any] = {}
    for name, mod in list(quantized_layers(model)):
        if parametrize.is_parametrized(mod, "weight"):
            quant = mod.parametrizations.weight[0]
            latent = mod.parametrizations.weight.original.detach()
            key = f"{name}.weight" if name else "weight"
            if isinstance(quant, TrainedTernary):
                steps.setdefault(TTQ_KEY, {})[key] = quant.scales()
            else:
                steps[key] = quant.steps(latent).numpy().copy()
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


def peer_file(pt: Path, path: Path) -> None:
    """Write a trained peer's weights as a `.perm` file: its quantized matrices on their
    grids, coded by rANS (TTQ's as ternary indices and a 1x2 matrix of scales), the rest
    exact."""
    sd = torch.load(pt, weights_only=True)["state_dict"]
    steps = torch.load(pt.with_suffix(".steps.pt"), weights_only=False)
    ttq = steps.pop(TTQ_KEY, {})
    arrays = {k: v.numpy() for k, v in sd.items()}
    for k, scales in ttq.items():
        arrays[k] = np.sign(arrays[k]).astype(np.float32) + np.float32(0.0)
        arrays[k + SCALES_SUFFIX] = np.asarray(scales, dtype=np.float32).reshape(1, 2)
        steps[k] = np.ones(arrays[k].shape[0], dtype=np.float32)
    items = [(k, v, "float32") for k, v in arrays.items()]
    grids = {k: exact_grid(arrays[k], "float32", s) for k, s in steps.items()}
    write_grids(path, items, {"note": "quantization-aware peer"}, grids)


def decoded_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state dict from a decoded peer file (TTQ's indices times its scales)."""
    out = {k: v for k, v in sd.items() if not k.endswith(SCALES_SUFFIX)}
    for k, scales in sd.items():
        if k.endswith(SCALES_SUFFIX):
            name = k.removesuffix(SCALES_SUFFIX)
            out[name] = rebuild_ternary(sd[name], scales[0, 0], scales[0, 1])
    return out
