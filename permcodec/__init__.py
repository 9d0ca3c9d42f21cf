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
from .format.reader import PermFile
from .format.reader import open_file as open
from .numpy import load as load_numpy

_TORCH_API = {"init", "save", "load", "save_checkpoint", "load_checkpoint"}
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
    "load_numpy",
    "open",
    "save",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name in _TORCH_API:
        from . import torch as _torch_api

        return getattr(_torch_api, name)
    if name in _LAPERM_API:
        from . import laperm as _laperm

        return getattr(_laperm, name)
    raise AttributeError(f"module 'permcodec' has no attribute {name!r}")
