"""Language models in a training run: next-byte batches, validation loss in bits per
byte, the warmup-and-cosine schedule, and sampling text from a model."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .text import TextData, val_batches, windows

#: Optimizer steps in one "epoch" of a language model run (the log's unit).
EPOCH_STEPS = 250
#: Share of the steps spent warming the learning rate up, and where cosine ends.
WARMUP = 0.05
FINAL_LR = 0.1


def warmup_cosine(total: int) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear warmup over the first 5%, then a
    cosine down to 10% of the peak at the last step."""
    warm = max(1, int(WARMUP * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return FINAL_LR + (1 - FINAL_LR) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


class TextTask:
    """Next-byte prediction on a corpus: the batches of one epoch, and a measurement."""

    def __init__(self, data: TextData, context: int, batch_size: int, seed: int) -> None:
        self.data, self.context, self.batch_size = data, context, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.steps_per_epoch = EPOCH_STEPS

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.steps_per_epoch):
            yield windows(self.data.train, self.context, self.batch_size, self.generator)

    @staticmethod
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    @staticmethod
    def correct(out: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
        return int((out.argmax(-1) == y).sum()), y.numel()

    def evaluate(self, model: nn.Module, device: str = "cpu") -> tuple[float, float]:
        """(validation loss in nats per byte, next-byte accuracy %) on fixed windows."""
        return evaluate_lm(model, self.data, self.context, device)


@torch.no_grad()
def evaluate_lm(
    model: nn.Module, data: TextData, context: int, device: str = "cpu"
) -> tuple[float, float]:
    """(mean cross-entropy in nats per byte, next-byte accuracy %) of ``model`` on the
    validation windows of ``data``, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in val_batches(data.val, context):
        out = model(x.to(device))
        loss_sum += F.cross_entropy(
            out.reshape(-1, out.shape[-1]), y.to(device).reshape(-1), reduction="sum"
        ).item()
        correct += int((out.argmax(-1).cpu() == y).sum())
        n += y.numel()
    model.train(was_training)
    return loss_sum / max(n, 1), 100.0 * correct / max(n, 1)


def bits_per_byte(loss: float) -> float:
    """A cross-entropy in nats per byte, in bits per byte."""
    return loss / math.log(2.0)


@torch.no_grad()
def sample(
    model: nn.Module,
    prompt: bytes,
    length: int,
    temperature: float = 0.8,
    top_k: int | None = 40,
    seed: int = 0,
) -> bytes:
    """``length`` bytes sampled after ``prompt`` (the model sees at most its context),
    at ``temperature`` from the ``top_k`` likeliest bytes (greedy at temperature 0)."""
    model.eval()
    context = int(getattr(model, "context", 128))
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    seq = list(prompt) or [ord("\n")]
    for _ in range(length):
        x = torch.tensor([seq[-context:]], dtype=torch.long, device=device)
        logits = model(x)[0, -1].float().cpu()
        if temperature <= 0:
            seq.append(int(logits.argmax()))
            continue
        logits = logits / temperature
        if top_k is not None and top_k < logits.numel():
            cut = torch.topk(logits, top_k).values[-1]
            logits = logits.masked_fill(logits < cut, float("-inf"))
        seq.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)))
    return bytes(seq[len(prompt) if prompt else 1 :])
