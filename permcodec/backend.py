"""A minimal array-operations shim so the generator runs on numpy or torch unchanged.

The core is written against :class:`NumpyOps`; `permcodec.torch` provides a twin that
runs the same arithmetic on torch tensors (CPU or CUDA). Only operations that round
identically everywhere are exposed: integer arithmetic, IEEE + - * /, bit views.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NumpyOps:
    """Array operations on numpy arrays (the reference backend)."""

    name = "numpy"

    def arange(self, start: int, stop: int) -> np.ndarray:
        return np.arange(start, stop, dtype=np.int64)

    def int64(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.int64)

    def float64(self, x: Any) -> np.ndarray:
        return np.asarray(x).astype(np.float64)

    def float32(self, x: Any) -> np.ndarray:
        return np.asarray(x).astype(np.float32)

    def full(self, shape: tuple[int, ...], value: float) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    def where(self, cond: Any, a: Any, b: Any) -> np.ndarray:
        return np.where(cond, a, b)

    def bits(self, x: Any) -> np.ndarray:
        """The IEEE bit patterns of float64 values, as int64."""
        return np.ascontiguousarray(x, dtype=np.float64).view(np.int64)

    def from_bits(self, b: Any) -> np.ndarray:
        """float64 values with the given int64 bit patterns."""
        return np.ascontiguousarray(b, dtype=np.int64).view(np.float64)

    def abs(self, x: Any) -> np.ndarray:
        return np.abs(x)

    def stack(self, xs: list[Any], axis: int) -> np.ndarray:
        return np.stack(xs, axis=axis)

    def argsort_stable(self, x: Any, axis: int = -1) -> np.ndarray:
        return np.argsort(x, axis=axis, kind="stable")

    def take_along(self, x: Any, idx: Any, axis: int = -1) -> np.ndarray:
        return np.take_along_axis(x, idx, axis=axis)

    def put_along(self, x: Any, idx: Any, values: Any, axis: int = -1) -> np.ndarray:
        out = x.copy()
        np.put_along_axis(out, idx, values, axis=axis)
        return out

    def zeros_like(self, x: Any) -> np.ndarray:
        return np.zeros_like(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)


NUMPY = NumpyOps()
