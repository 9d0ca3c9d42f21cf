"""torch twins of the numpy core's operations, and tensors <-> numpy storage arrays.

:class:`TorchOps` runs the generator, order keys, row sorts and row classes of the
core on torch tensors of any device with the same results as numpy
(:class:`permcodec.core.ops.NumpyOps`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.dtypes import c_contiguous
from ..core.initializers import generate
from ..core.plan import TensorPlan
from ..errors import DeviceError, PermcodecError
from ..kernels.contract import order_key

_TO_NAME = {
    torch.float64: "float64",
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.int16: "int16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.bool: "bool",
}
_FROM_NAME = {v: k for k, v in _TO_NAME.items()}


class TorchOps:
    """The :class:`permcodec.core.ops.NumpyOps` operations on torch tensors of a device."""

    name = "torch"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    def arange(self, start: int, stop: int) -> torch.Tensor:
        return torch.arange(start, stop, dtype=torch.int64, device=self.device)

    def int64(self, x: Any) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.int64, device=self.device)

    def float64(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = np.asarray(x)  # python floats would become float32 tensors
        return torch.as_tensor(x, device=self.device).to(torch.float64)

    def float32(self, x: Any) -> torch.Tensor:
        return torch.as_tensor(x, device=self.device).to(torch.float32)

    def full(self, shape: tuple[int, ...], value: float) -> torch.Tensor:
        return torch.full(shape, value, dtype=torch.float64, device=self.device)

    def where(self, cond: Any, a: Any, b: Any) -> torch.Tensor:
        return torch.where(cond, a, b)

    def bits(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float64).contiguous().view(torch.int64)

    def from_bits(self, b: torch.Tensor) -> torch.Tensor:
        return b.contiguous().view(torch.float64)

    def abs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)

    def stack(self, xs: list[torch.Tensor], axis: int) -> torch.Tensor:
        return torch.stack(xs, dim=axis)

    def argsort_stable(self, x: torch.Tensor, axis: int = -1) -> torch.Tensor:
        return torch.argsort(x, dim=axis, stable=True)

    def take_along(self, x: torch.Tensor, idx: torch.Tensor, axis: int = -1) -> torch.Tensor:
        return torch.gather(x, axis, idx)

    def put_along(
        self, x: torch.Tensor, idx: torch.Tensor, values: torch.Tensor, axis: int = -1
    ) -> torch.Tensor:
        return x.clone().scatter_(axis, idx, values.expand_as(idx))

    def zeros_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def searchsorted(self, sorted_seq: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(sorted_seq, x.contiguous(), right=True).to(torch.int64)

    def zeros(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(shape, dtype=like.dtype, device=self.device)

    def int_bits(self, x: torch.Tensor, width: int) -> torch.Tensor:
        return x.contiguous().view(_INT_OF_WIDTH[width]).to(torch.int64)

    def itemsize(self, x: torch.Tensor) -> int:
        return int(x.element_size())

    def values_of_keys(self, keys: torch.Tensor, like: torch.Tensor, width: int) -> torch.Tensor:
        return order_key(keys, width).to(_INT_OF_WIDTH[width]).view(like.dtype)

    def sort_rows(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x, dim=1).values

    def row_starts(self, keys: torch.Tensor) -> torch.Tensor:
        new = torch.ones(keys.shape, dtype=torch.bool, device=self.device)
        new[:, 1:] = keys[:, 1:] != keys[:, :-1]
        return new

    def cumsum(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.cumsum(x.to(torch.int64), dim=axis)

    def count_rows(self, cls: torch.Tensor, n: int) -> torch.Tensor:
        counts = torch.zeros((cls.shape[0], n), dtype=torch.int64, device=self.device)
        return counts.scatter_add_(1, cls, torch.ones_like(cls))

    def ones_int(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.ones(shape, dtype=torch.int64, device=self.device)

    def broadcast_arange(self, rows: int, m: int) -> torch.Tensor:
        return self.arange(0, m).expand(rows, m)

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.cpu().numpy()


# ---------------------------------------------------------------- tensors <-> numpy


def format_dtype(dtype: torch.dtype) -> str:
    """The `.perm` dtype name of a torch dtype."""
    try:
        return _TO_NAME[dtype]
    except KeyError:
        raise PermcodecError(f"dtype {dtype} is not supported by the .perm format") from None


def to_numpy(t: torch.Tensor) -> tuple[np.ndarray, str]:
    """A CPU numpy copy of ``t`` in its storage dtype, and the format dtype name."""
    name = format_dtype(t.dtype)
    t = t.detach().cpu().contiguous()
    if name == "bfloat16":
        return t.view(torch.int16).numpy().view(np.uint16), name
    return t.numpy(), name


def to_torch(a: np.ndarray, name: str, device: str | torch.device = "cpu") -> torch.Tensor:
    """A torch tensor of format dtype ``name`` from its numpy storage array."""
    a = c_contiguous(a)
    if name == "bfloat16":
        t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(a)
    return t.to(device)


def generate_torch(
    tp: TensorPlan, shape: tuple[int, ...], dtype: torch.dtype, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The seeded initial tensor of a plan entry, generated with torch on ``device``."""
    values = generate(tp.spec, tp.key, shape, TorchOps(device))
    return values.reshape(shape).to(dtype)


_INT_OF_WIDTH = {64: torch.int64, 32: torch.int32, 16: torch.int16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a `.perm` dtype name."""
    return _FROM_NAME[name]


def device_of(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that exists here, else :class:`DeviceError` saying
    why (an unknown name, no CUDA, an index past the last GPU)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DeviceError(f"unknown device {str(device)!r}: {first}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {str(device)!r} was asked for, but torch sees no CUDA device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(
            f"device {str(device)!r} was asked for, but torch sees "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DeviceError(f"device {str(device)!r} is not usable here: {first}") from None
    return dev
