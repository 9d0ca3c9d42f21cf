"""Exceptions raised by permcodec.

Every problem with a `.perm` file or with the data handed to the encoder raises a
subclass of :class:`PermcodecError`, itself a :class:`ValueError`, so callers can catch
one type.
"""

from __future__ import annotations

import importlib
from typing import Any


class PermcodecError(ValueError):
    """Base class of every error permcodec raises about files, plans or tensors."""


class FormatError(PermcodecError):
    """The file is not a valid `.perm` file: bad magic, truncated, out-of-range field."""


class UnsupportedVersionError(FormatError):
    """The file was written by a newer permcodec with a format this one cannot read."""


class IntegrityError(FormatError):
    """A checksum or a digest of decoded values does not match: the file is damaged."""

    def __init__(self, message: str, tensor: str | None = None) -> None:
        super().__init__(message)
        self.tensor = tensor


class LimitError(PermcodecError):
    """The file asks for more than a reader's resource limit allows (see
    :mod:`permcodec.limits`); it may be valid, but it is not decoded."""


class NotAnArrangementError(PermcodecError):
    """A permuted tensor is not an exact rearrangement of its seeded initialization."""

    def __init__(self, message: str, tensor: str, row: int) -> None:
        super().__init__(message)
        self.tensor = tensor
        self.row = row


class PlanError(PermcodecError):
    """The plan (seed, initializer specs) is missing or does not fit the tensors."""


class UnsafeCheckpointError(PermcodecError):
    """A `.pt` file needs unpickling of code, which permcodec refuses to do."""


class LossyWarning(UserWarning):
    """Some tensors were stored lossily (rank buckets); the message says how much."""


class KernelWarning(RuntimeWarning):
    """A compiled kernel (a C extension, triton) could not be loaded; the numpy reference,
    which computes the same bits more slowly, runs instead."""


class MissingDependencyError(ImportError):
    """An optional package that a feature needs is not installed; the message says
    exactly what to install."""


def require(module: str, feature: str, package: str | None = None, extra: str = "all") -> Any:
    """Import ``module``, or raise :class:`MissingDependencyError` naming what
    ``feature`` needs and the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pkg = package or module
        raise MissingDependencyError(
            f"{feature} needs {pkg}: pip install {pkg} (or pip install 'permcodec[{extra}]')"
        ) from None


class DeviceError(PermcodecError):
    """The device asked for does not exist here (no CUDA, an unknown name, an index
    past the last GPU)."""
