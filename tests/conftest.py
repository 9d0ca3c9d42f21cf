"""Shared helpers for the permcodec test suite.

Specs used across files are parametrized through ``pytest_generate_tests`` (a test that
asks for ``spec_case`` runs once per initializer case); helpers that hypothesis tests
use are session-scoped fixtures so they can be combined with ``@given``.
``adversarial_normal_std`` turns any float64 numpy/torch difference in ndtri into a
float32 initial value that differs, which users would see as a fresh model that
cannot be saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from permcodec import InitSpec
from permcodec.core import detmath, philox

#: (id, kind or alias, parameters): one case per initializer the format knows.
SPEC_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("he_uniform", "he_uniform", {}),
    ("he_normal", "he_normal", {}),
    ("he_normal_fan_out", "kaiming_normal", {"mode": "fan_out"}),
    ("glorot_uniform", "glorot_uniform", {}),
    ("glorot_normal", "glorot_normal", {}),
    ("torch_default", "torch_default", {}),
    ("uniform", "uniform", {"a": -0.25, "b": 0.75}),
    ("normal", "normal", {"mean": 0.1, "std": 0.02}),
    ("trunc_normal", "trunc_normal", {"mean": 0.05, "std": 0.5, "a": -0.6, "b": 0.9}),
    ("constant", "constant", {"value": 0.08}),
    ("constant_random_sign", "constant", {"value": 0.08, "random_sign": True}),
    ("binary", "binary", {}),
    ("two_value", "two_value", {"low": -0.5, "high": 1.5, "p": 0.25}),
]


def make_spec(case: tuple[str, str, dict[str, Any]], **kw: Any) -> InitSpec:
    """An :class:`InitSpec` of a ``SPEC_CASES`` entry, with density/granularity in ``kw``."""
    _, kind, params = case
    return InitSpec(kind, **params, **kw)


def adversarial_normal_std(key: tuple[int, int], n: int) -> float:
    """A ``normal`` std that makes numpy and torch disagree on a float32 initial value
    of a stream, whenever their float64 ndtri differ anywhere in the first ``n`` values
    (one ulp is enough: the std puts that value on a float32 rounding boundary).

    Where they agree everywhere (as they must), a fixed std that exposed torch's
    inexact CPU sqrt in permcodec 0.1.0 (commit d58623f) with ``stream_key(0, "weight")``.
    """
    from permcodec.torch import TorchOps

    u = (philox.words(key, philox.VALUES, 0, n).astype(np.float64) + 0.5) * 2.0**-32
    z_np = detmath.ndtri(u)
    z_t = detmath.ndtri(TorchOps("cpu").float64(u), TorchOps("cpu")).numpy()
    for i in np.nonzero(z_np != z_t)[0]:
        a, b = float(z_np[i]), float(z_t[i])
        mid = 0.5 * (a + b)
        f = np.float32(mid)
        lo = np.nextafter(f, np.float32(-np.inf)) if float(f) > mid else f
        boundary = 0.5 * (float(lo) + float(np.nextafter(lo, np.float32(np.inf))))
        s0 = boundary / mid
        for s in (s0, float(np.nextafter(s0, 0.0)), float(np.nextafter(s0, 2.0 * s0))):
            if s > 0 and np.float32(0.0 + s * a) != np.float32(0.0 + s * b):
                return s
    return 0.9999999696338577  # found with stream_key(0, "weight"), n = 64 * 256


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "spec_case" in metafunc.fixturenames:
        metafunc.parametrize("spec_case", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])


@pytest.fixture(scope="session")
def spec_cases() -> list[tuple[str, str, dict[str, Any]]]:
    return list(SPEC_CASES)


@pytest.fixture(scope="session")
def spec_of() -> Callable[..., InitSpec]:
    return make_spec


@pytest.fixture(scope="session")
def permute_rows() -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """Rearrange every row of a (rows, m) array independently at random (a copy)."""

    def permute(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rows = np.asarray(rows)
        assert rows.ndim == 2
        order = np.argsort(rng.random(rows.shape), axis=1, kind="stable")
        return np.take_along_axis(rows, order, axis=1)

    return permute


@pytest.fixture(scope="session")
def permute_model_rows() -> Callable[..., None]:
    """In place: rearrange each seeded row (per the model's plan) of a torch module."""

    def permute(model: Any, seed: int = 0) -> None:
        import torch

        gen = torch.Generator().manual_seed(seed)
        plan = model.permcodec_plan
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name not in plan.tensors:
                    continue
                tensor_wide = plan.tensors[name].spec["granularity"] == "tensor"
                rows = p.view(1, -1) if (tensor_wide or p.dim() < 2) else p.view(p.shape[0], -1)
                order = torch.argsort(torch.rand(rows.shape, generator=gen), dim=1)
                rows.copy_(torch.gather(rows, 1, order))

    return permute


@pytest.fixture(scope="session")
def storage_bytes() -> Callable[[Any], bytes]:
    """Raw bytes of a numpy array or torch tensor (bfloat16 included)."""

    def to_bytes(x: Any) -> bytes:
        if isinstance(x, np.ndarray):
            return np.ascontiguousarray(x).tobytes()
        import torch

        t = x.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        return t.numpy().tobytes()

    return to_bytes


@pytest.fixture(scope="session")
def find_adversarial_std() -> Callable[[tuple[int, int], int], float]:
    return adversarial_normal_std
