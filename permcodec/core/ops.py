"""A minimal array-operations shim so the core runs on numpy or torch unchanged.

The generator, order keys, row sorts and row classes are written against
:class:`NumpyOps`; :class:`permcodec.torch.ops.TorchOps` is a twin that runs the same
operations on torch tensors (CPU or CUDA). Only operations that give identical results
everywhere are exposed: integer arithmetic, IEEE + - * /, bit views, sorts of integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels.contract import order_key


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
        """Stable argsort. Rows of integers spanning less than 2**32 are sorted packed
        with their index into one int64: numpy's SIMD sort of those is several times
        faster than a stable argsort, and gives the same order (packed values differ)."""
        x = np.asarray(x)
        integers = x.dtype.kind == "i" or (x.dtype.kind == "u" and x.dtype.itemsize < 8)
        if integers and x.ndim == 2 and axis in (1, -1) and x.size and x.shape[1] <= 1 << 31:
            lo, hi = int(x.min()), int(x.max())
            if hi - lo < 1 << 32:
                packed = (x.astype(np.int64) - lo - (1 << 31)) << 32
                packed |= np.arange(x.shape[1], dtype=np.int64)
                packed.sort(axis=1)
                return packed & 0xFFFFFFFF
        return np.argsort(x, axis=axis, kind="stable")

    def take_along(self, x: Any, idx: Any, axis: int = -1) -> np.ndarray:
        return np.take_along_axis(x, idx, axis=axis)

    def put_along(self, x: Any, idx: Any, values: Any, axis: int = -1) -> np.ndarray:
        out = x.copy()
        np.put_along_axis(out, idx, values, axis=axis)
        return out

    def zeros_like(self, x: Any) -> np.ndarray:
        return np.zeros_like(x)

    def searchsorted(self, sorted_seq: Any, x: Any) -> np.ndarray:
        """For each element of ``x``, how many of ``sorted_seq`` are <= it."""
        return np.searchsorted(sorted_seq, x, side="right").astype(np.int64)

    def zeros(self, shape: tuple[int, ...], like: Any) -> np.ndarray:
        """Zeros of ``like``'s dtype."""
        return np.zeros(shape, dtype=like.dtype)

    def int_bits(self, x: Any, width: int) -> np.ndarray:
        """The bit patterns of ``width``-bit values (any dtype of that size), as int64
        sign-extended from ``width`` bits."""
        return np.require(x, requirements="C").view(f"<i{width // 8}").astype(np.int64)

    def itemsize(self, x: Any) -> int:
        """Bytes per element of ``x``."""
        return int(x.dtype.itemsize)

    def values_of_keys(self, keys: np.ndarray, like: Any, width: int) -> np.ndarray:
        """The values (of ``like``'s dtype, ``width`` bits) whose order keys are ``keys``:
        the key map is its own inverse on sign-extended bit patterns."""
        return order_key(keys, width).astype(f"<i{width // 8}").view(like.dtype)

    def sort_rows(self, x: np.ndarray) -> np.ndarray:
        """Each row sorted ascending (in place: ``x`` is a scratch array)."""
        x.sort(axis=1)
        return x

    def row_starts(self, keys: np.ndarray) -> np.ndarray:
        """Per row of sorted keys, True where a key differs from the one before it."""
        new = np.ones(keys.shape, dtype=bool)
        new[:, 1:] = keys[:, 1:] != keys[:, :-1]
        return new

    def cumsum(self, x: Any, axis: int) -> np.ndarray:
        return np.cumsum(x, axis=axis, dtype=np.int64)

    def count_rows(self, cls: np.ndarray, n: int) -> np.ndarray:
        """(rows, n) counts of each class index in each row of ``cls``."""
        rows = cls.shape[0]
        flat = (np.arange(rows, dtype=np.int64)[:, None] * n + cls).reshape(-1)
        return np.bincount(flat, minlength=rows * n).reshape(rows, n)

    def ones_int(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.ones(shape, dtype=np.int64)

    def broadcast_arange(self, rows: int, m: int) -> np.ndarray:
        """Every row 0..m-1, as a (rows, m) int64 view."""
        return np.broadcast_to(np.arange(m, dtype=np.int64), (rows, m))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)


NUMPY = NumpyOps()
