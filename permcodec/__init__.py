"""permcodec: store LaPerm-trained networks as a seed plus one permutation per row.

The core (generator, initializers, permutation coding, container) needs only numpy;
``permcodec.init``, ``save``, ``load`` and the checkpoint helpers import torch on
first use.
"""

from __future__ import annotations

from typing import Any

from .core.initializers import InitSpec
from .core.plan import Plan
from .core.version import __version__
from .errors import (
    FormatError,
    IntegrityError,
    KernelWarning,
    LimitError,
    LossyWarning,
    NotAnArrangementError,
    PermcodecError,
    PlanError,
    UnsafeCheckpointError,
    UnsupportedVersionError,
)
from .format.reader import PermFile, Source
from .numpy import load as load_numpy

_TORCH_API = {"init", "save", "load", "load_model", "save_checkpoint", "load_checkpoint"}
_LAPERM_API = {"LaPerm"}

__all__ = [
    "FormatError",
    "InitSpec",
    "IntegrityError",
    "KernelWarning",
    "LaPerm",
    "LimitError",
    "LossyWarning",
    "NotAnArrangementError",
    "PermFile",
    "PermcodecError",
    "Plan",
    "PlanError",
    "UnsafeCheckpointError",
    "UnsupportedVersionError",
    "__version__",
    "init",
    "load",
    "load_checkpoint",
    "load_model",
    "load_numpy",
    "open",
    "save",
    "save_checkpoint",
]


def open(
    path: Source,
    framework: str = "np",
    device: str = "cpu",
    *,
    strict: bool = True,
    max_bytes: int | None = None,
) -> PermFile:
    """Open a `.perm` file for lazy, one-tensor-at-a-time reading (a context manager
    with ``keys()``, ``get_tensor(name)``, ``metadata()``, ``info()``, ``verify()``), as
    safetensors' ``safe_open``: ``framework="np"`` gives numpy arrays, ``"pt"`` torch
    tensors on ``device``. ``strict=False`` reads the intact tensors of a damaged file;
    ``max_bytes`` caps the decoded size it may claim. See :class:`PermFile`."""
    if framework in ("pt", "torch"):
        from .torch import TorchFile

        return TorchFile(path, strict=strict, max_bytes=max_bytes, device=device)
    if framework not in ("np", "numpy"):
        raise ValueError(f"framework must be 'np' or 'pt', got {framework!r}")
    if str(device) != "cpu":
        raise ValueError(f"numpy arrays live on the cpu; for device {device!r} use framework='pt'")
    return PermFile(path, strict=strict, max_bytes=max_bytes)


def __getattr__(name: str) -> Any:
    if name in _TORCH_API:
        from . import torch as _torch_api

        return getattr(_torch_api, name)
    if name in _LAPERM_API:
        from . import laperm as _laperm

        return getattr(_laperm, name)
    raise AttributeError(f"module 'permcodec' has no attribute {name!r}")
