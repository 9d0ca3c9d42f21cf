"""Built-in models: every registry entry builds and runs for MNIST, CIFAR and digits shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from permcodec.errors import PermcodecError
from permcodec.experiments.models import MODELS, build_model

SHAPES = [(1, 28, 10), (3, 32, 10), (1, 8, 10)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def first_linear(model: nn.Module) -> nn.Linear:
    return next(m for m in model.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[1]}")
def test_builds_and_runs(name: str, shape: tuple[int, int, int]) -> None:
    c, size, classes = shape
    model = build_model(name, in_channels=c, image_size=size, num_classes=classes)
    x = torch.randn(3, c, size, size, generator=torch.Generator().manual_seed(0))
    model.train()
    assert model(x).shape == (3, classes)  # train mode: BatchNorm needs > 1 value per channel
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, classes)
    assert torch.isfinite(out).all()


def test_registry_names() -> None:
    assert set(MODELS) == {
        "logreg",
        "mlp128",
        "lenet300",
        "lenet5",
        "conv2",
        "conv4",
        "conv6",
        "conv2-bn",
        "conv4-bn",
        "conv6-bn",
        "resnet20",
    }


def test_unknown_model_lists_names() -> None:
    with pytest.raises(PermcodecError, match="known models: logreg, mlp128, lenet300, lenet5"):
        build_model("vgg16", in_channels=1, image_size=28, num_classes=10)


def test_bad_sizes() -> None:
    with pytest.raises(PermcodecError, match="image_size"):
        build_model("lenet5", in_channels=1, image_size=0, num_classes=10)


@pytest.mark.parametrize(
    ("name", "c", "size", "expected"),
    [
        ("lenet300", 1, 28, 266_610),  # LeNet-300-100 on MNIST
        ("lenet5", 1, 28, 61_706),  # classic LeNet-5 on MNIST
        ("conv2", 3, 32, 4_301_642),  # Frankle & Carbin: 4.3M
        ("conv4", 3, 32, 2_425_930),  # Frankle & Carbin: 2.4M
        ("conv6", 3, 32, 2_262_602),
        ("resnet20", 3, 32, 269_722),  # He et al.: 0.27M
    ],
)
def test_parameter_counts(name: str, c: int, size: int, expected: int) -> None:
    assert n_params(build_model(name, in_channels=c, image_size=size, num_classes=10)) == expected


def test_resnet20_is_the_known_size() -> None:
    n = n_params(build_model("resnet20", in_channels=3, image_size=32, num_classes=10))
    assert abs(n - 272_000) <= 0.01 * 272_000
    model = build_model("resnet20", in_channels=3, image_size=32, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19  # + the final Linear = 20 weighted layers; option A adds none
    assert all(m.bias is None for m in convs)


@pytest.mark.parametrize("depth", [2, 4, 6])
def test_batchnorm_variants(depth: int) -> None:
    plain = build_model(f"conv{depth}", in_channels=3, image_size=32, num_classes=10)
    bn = build_model(f"conv{depth}-bn", in_channels=3, image_size=32, num_classes=10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    bns = [m for m in bn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == depth
    # BatchNorm sits between each conv and its ReLU
    layers = list(bn)
    for i, m in enumerate(layers):
        if isinstance(m, nn.Conv2d):
            assert isinstance(layers[i + 1], nn.BatchNorm2d)
            assert isinstance(layers[i + 2], nn.ReLU)


def test_small_images_keep_spatial_size() -> None:
    # conv6 on 8x8: three pools 8 -> 4 -> 2 -> 1; lenet5 on 8x8: 16 x 2 x 2 features
    conv6 = build_model("conv6", in_channels=1, image_size=8, num_classes=10)
    assert sum(isinstance(m, nn.MaxPool2d) for m in conv6.modules()) == 3
    assert first_linear(conv6).in_features == 256
    lenet5 = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    assert first_linear(lenet5).in_features == 16 * 2 * 2
    lenet5 = build_model("lenet5", in_channels=3, image_size=32, num_classes=10)
    assert first_linear(lenet5).in_features == 16 * 5 * 5
    tiny = build_model("conv6", in_channels=1, image_size=2, num_classes=3)
    assert tiny(torch.zeros(2, 1, 2, 2)).shape == (2, 3)


def test_weight_agnostic_mlps_have_the_papers_shapes() -> None:
    logreg = build_model("logreg", in_channels=1, image_size=28, num_classes=10)
    mlp128 = build_model("mlp128", in_channels=1, image_size=28, num_classes=10)
    assert [tuple(p.shape) for p in logreg.parameters()] == [(10, 784), (10,)]
    shapes = [tuple(p.shape) for n, p in mlp128.named_parameters() if n.endswith("weight")]
    assert shapes == [(128, 784), (64, 128), (10, 64)]
