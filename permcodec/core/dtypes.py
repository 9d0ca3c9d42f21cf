"""Tensor dtypes the format knows, and bit-exact conversions between them.

numpy has no bfloat16: the core holds bfloat16 tensors as their uint16 bit patterns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import FormatError
from ..kernels.contract import order_key
from .ops import NUMPY, NumpyOps

#: A tensor on its way into a file: (name, array in its storage dtype, dtype name).
TensorItem = tuple[str, np.ndarray, str]

#: name -> (numpy storage dtype, itemsize). bfloat16 is stored as uint16 bits.
STORAGE: dict[str, np.dtype] = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}

#: dtypes a permuted (seeded) tensor may have.
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")

#: Bits of each float dtype.
KEY_BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16}


def storage_dtype(name: str) -> np.dtype:
    """The numpy dtype that holds a tensor of format dtype ``name``."""
    try:
        return STORAGE[name]
    except KeyError:
        raise FormatError(f"unknown dtype {name!r}") from None


def from_float32(values: np.ndarray, name: str) -> np.ndarray:
    """Cast float32 values to dtype ``name`` with round-to-nearest-even (as torch does)."""
    values = np.asarray(values, dtype=np.float32)
    if name == "float32":
        return values
    if name == "bfloat16":
        bits = values.view(np.uint32).astype(np.uint64)
        bias = 0x7FFF + ((bits >> 16) & 1)
        return ((bits + bias) >> 16).astype(np.uint16)
    if name in ("float16", "float64"):
        with np.errstate(over="ignore"):  # overflow to inf is the defined result
            return values.astype(STORAGE[name])
    raise FormatError(f"dtype {name!r} cannot hold seeded values; use one of {FLOAT_DTYPES}")


def as_float64(values: np.ndarray, name: str) -> np.ndarray:
    """Values of a float dtype ``name`` (in storage form) as float64."""
    if name == "bfloat16":
        return (
            (np.asarray(values, dtype=np.uint16).astype(np.uint32) << 16)
            .view(np.float32)
            .astype(np.float64)
        )
    return np.asarray(values).astype(np.float64)


def c_contiguous(a: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
    """``a`` as a C-contiguous array, keeping 0-d arrays 0-d (unlike np.ascontiguousarray)."""
    return np.require(np.asarray(a, dtype=dtype), requirements="C")


def order_keys(values: Any, name: str, xp: NumpyOps = NUMPY) -> Any:
    """int64 keys whose order is the float order, with -0.0 below +0.0; equal keys mean
    bit-identical values (numpy arrays, or torch tensors with a torch ``xp``)."""
    width = KEY_BITS[name]
    return order_key(xp.int_bits(values, width), width)
