"""permcodec: store LaPerm-trained networks as a seed plus one permutation per row.

The core (generator, initializers, permutation coding, container) needs only numpy;
``permcodec.init``, ``save``, ``load`` and the checkpoint helpers import torch on
first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.4.0"

from .errors import (
    FormatError,
    IntegrityError,
    LimitError,
    LossyWarning,
    NotAnArrangementError,
    PermcodecError,
    PlanError,
    UnsafeCheckpointError,
    UnsupportedVersionError,
)
from .initializers import InitSpec
from .numpy import load as load_numpy
from .permfile import PermFile
from .permfile import open_file as open
from .plan import Plan

_TORCH_API = {"init", "save", "load", "save_checkpoint", "load_checkpoint"}
_LAPERM_API = {"LaPerm"}

__all__ = [
    "FormatError",
    "InitSpec",
    "IntegrityError",
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
