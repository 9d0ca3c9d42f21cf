"""Built-in models for LaPerm experiments: LeNet-300-100, LeNet-5, Conv-2/4/6 and ResNet-20.

Every builder takes ``in_channels``, ``image_size`` (square images) and ``num_classes`` as
keywords, so one name fits MNIST-like 1x28x28, scikit-learn digits 1x8x8 and CIFAR 3x32x32.
Layers keep torch's default biases and initialization (``permcodec.init`` re-seeds the
weights anyway); nothing uses dropout. Where a pooling layer would shrink a side below
1 pixel (very small images) it is left out, so every model builds for any image size.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PermcodecError

__all__ = [
    "MODELS",
    "build_model",
    "conv2",
    "conv4",
    "conv6",
    "lenet5",
    "lenet300",
    "mlp",
    "resnet20",
]


def _check(in_channels: int, image_size: int, num_classes: int) -> None:
    for name, v in (
        ("in_channels", in_channels),
        ("image_size", image_size),
        ("num_classes", num_classes),
    ):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise PermcodecError(f"{name} must be a positive integer, got {v!r}")


def _pool(layers: list[nn.Module], size: int) -> int:
    """Append a 2x2 max-pool when ``size`` allows it; the side length afterwards."""
    if size < 2:
        return size
    layers.append(nn.MaxPool2d(2))
    return size // 2


def mlp(
    hidden: tuple[int, ...], *, in_channels: int, image_size: int, num_classes: int
) -> nn.Module:
    """A ReLU MLP on the flattened image with the given hidden widths."""
    _check(in_channels, image_size, num_classes)
    widths = [in_channels * image_size**2, *hidden, num_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(pairwise(widths)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def lenet300(*, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """LeNet-300-100: a 300-100 ReLU MLP on the flattened image (266,610 weights on MNIST)."""
    return mlp((300, 100), in_channels=in_channels, image_size=image_size, num_classes=num_classes)


def lenet5(*, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """LeNet-5 (ReLU, max-pool): conv 6@5x5, pool, conv 16@5x5, pool, 120-84 MLP.

    The first conv is padded by 2 for images smaller than 32 (28x28 MNIST then gives
    the classic 16x5x5 features). For small images the second conv is padded by 2 too
    when an unpadded 5x5 conv would leave fewer than 2 pixels to pool (8x8 digits:
    8 -> 8 -> pool 4 -> 4 -> pool 2, 16x2x2 features), and a pool that would shrink a
    side below 1 is left out.
    """
    _check(in_channels, image_size, num_classes)
    pad1 = 2 if image_size < 32 else 0
    size = image_size + 2 * pad1 - 4  # >= 1: unpadded only from 32 up
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 6, 5, padding=pad1), nn.ReLU()]
    size = _pool(layers, size)
    pad2 = 2 if size - 4 < 2 else 0
    layers += [nn.Conv2d(6, 16, 5, padding=pad2), nn.ReLU()]
    size = _pool(layers, size + 2 * pad2 - 4)
    layers += [
        nn.Flatten(),
        nn.Linear(16 * size * size, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    ]
    return nn.Sequential(*layers)


#: Conv-N bodies: output channels of each 3x3 conv, "M" for a 2x2 max-pool.
_CONV_PLANS: dict[int, list[int | str]] = {
    2: [64, 64, "M"],
    4: [64, 64, "M", 128, 128, "M"],
    6: [64, 64, "M", 128, 128, "M", 256, 256, "M"],
}


def _conv_n(
    depth: int, *, in_channels: int, image_size: int, num_classes: int, batchnorm: bool = False
) -> nn.Module:
    """Conv-``depth`` of Frankle & Carbin (2019), as used by Zhou et al. and LaPerm."""
    _check(in_channels, image_size, num_classes)
    layers: list[nn.Module] = []
    channels, size = in_channels, image_size
    for item in _CONV_PLANS[depth]:
        if item == "M":
            size = _pool(layers, size)
            continue
        assert isinstance(item, int)
        layers.append(nn.Conv2d(channels, item, 3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU())
        channels = item
    layers += [
        nn.Flatten(),
        nn.Linear(channels * size * size, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
    ]
    return nn.Sequential(*layers)


def conv2(
    *, in_channels: int, image_size: int, num_classes: int, batchnorm: bool = False
) -> nn.Module:
    """Conv-2: [64, 64, pool] 3x3 convs, then a 256-256 MLP (4.3M weights on CIFAR-10)."""
    return _conv_n(
        2,
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        batchnorm=batchnorm,
    )


def conv4(
    *, in_channels: int, image_size: int, num_classes: int, batchnorm: bool = False
) -> nn.Module:
    """Conv-4: [64, 64, pool, 128, 128, pool] 3x3 convs, then a 256-256 MLP."""
    return _conv_n(
        4,
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        batchnorm=batchnorm,
    )


def conv6(
    *, in_channels: int, image_size: int, num_classes: int, batchnorm: bool = False
) -> nn.Module:
    """Conv-6: [64, 64, pool, 128, 128, pool, 256, 256, pool] 3x3 convs, then a 256-256 MLP."""
    return _conv_n(
        6,
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        batchnorm=batchnorm,
    )


class _PadShortcut(nn.Module):
    """Option-A shortcut of He et al.: subsample by ``stride``, zero-pad the new channels.

    Parameter-free, so ResNet-20 keeps its 0.27M weights.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.before = (out_planes - in_planes) // 2
        self.after = out_planes - in_planes - self.before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.before, self.after))


class _BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity (or option-A) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            _PadShortcut(in_planes, planes, stride)
            if stride != 1 or in_planes != planes
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016, section 4.2): 6n+2 layers, 16/32/64 filters."""

    def __init__(self, blocks_per_stage: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages: list[nn.Module] = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(_BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet20(*, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016): 3 stages of 3 basic blocks, option-A shortcuts.

    Convolutions have no bias (each is followed by BatchNorm), as in the paper and its
    reference implementations: 269,722 parameters for 3 channels and 10 classes, the
    paper's "0.27M" (the often quoted 272,474 is with 1x1-conv option-B shortcuts).
    Global average pooling makes it work for any ``image_size``.
    """
    _check(in_channels, image_size, num_classes)
    return _CifarResNet(3, in_channels, num_classes)


#: Model builders by name, each called with ``in_channels``, ``image_size``, ``num_classes``.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "logreg": partial(mlp, ()),
    "mlp128": partial(mlp, (128, 64)),
    "lenet300": lenet300,
    "lenet5": lenet5,
    "conv2": conv2,
    "conv4": conv4,
    "conv6": conv6,
    "conv2-bn": partial(conv2, batchnorm=True),
    "conv4-bn": partial(conv4, batchnorm=True),
    "conv6-bn": partial(conv6, batchnorm=True),
    "resnet20": resnet20,
}


class ByteLM(nn.Module):
    """A byte-level transformer language model from torch.nn parts: token and learned
    position embeddings, pre-norm ``nn.TransformerEncoderLayer`` blocks under a causal
    mask, a final LayerNorm and an output head tied to the token embedding (stored
    once). ``forward`` maps (batch, T) bytes to (batch, T, 256) logits, T <= context."""

    vocab = 256

    def __init__(self, dim: int, layers: int, heads: int, ff: int, context: int) -> None:
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(self.vocab, dim)
        self.pos = nn.Embedding(context, dim)
        block = nn.TransformerEncoderLayer(
            dim, heads, ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, self.vocab, bias=False)
        self.head.weight = self.tok.weight
        mask = torch.triu(torch.full((context, context), float("-inf")), diagonal=1)
        self.register_buffer("causal", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(t, device=x.device))
        h = self.blocks(h, mask=self.causal[:t, :t], is_causal=True)
        return self.head(self.norm(h))


#: Language models by name: (dim, layers, heads, feed-forward width, context).
LANGUAGE_MODELS: dict[str, tuple[int, int, int, int, int]] = {
    "lm-tiny": (96, 2, 4, 384, 96),  # 0.25M parameters
    "lm-small": (128, 4, 4, 512, 128),  # 0.84M parameters
}


def is_language_model(name: str) -> bool:
    return name in LANGUAGE_MODELS


def build_lm(name: str) -> ByteLM:
    """The registry language model ``name``."""
    try:
        return ByteLM(*LANGUAGE_MODELS[name])
    except KeyError:
        known = ", ".join(LANGUAGE_MODELS)
        raise PermcodecError(f"unknown language model {name!r}; known: {known}") from None


def build_model(name: str, *, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """The registry model ``name`` for images of ``in_channels`` x ``image_size``²."""
    try:
        builder = MODELS[name]
    except KeyError:
        known = ", ".join([*MODELS, *LANGUAGE_MODELS])
        raise PermcodecError(f"unknown model {name!r}; known models: {known}") from None
    return builder(in_channels=in_channels, image_size=image_size, num_classes=num_classes)
