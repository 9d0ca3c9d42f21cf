"""Decode ``row-rans`` tensors on a torch device: generate, sort, entropy-decode and
gather all run there (the entropy decoder is :mod:`permcodec.triton_rans`); only the
payload goes to the device, and the decoded tensor's bytes come back once for its
digest.

Used by :func:`permcodec.torch.load` on CUDA devices when triton imports; elsewhere
the CPU decoder runs and the tensors are moved. The result is bit-identical to the CPU
decoder's.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from . import codec, rans
from .container import section_digest
from .errors import IntegrityError
from .initializers import generate
from .torch import TorchOps, to_numpy, to_torch

_KEY_BITS = {torch.float64: 64, torch.float32: 32, torch.float16: 16, torch.bfloat16: 16}
_INT_VIEW = {64: torch.int64, 32: torch.int32, 16: torch.int16}
_TORCH_DTYPE = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def usable(device: torch.device) -> bool:
    """Whether tensors can be decoded on ``device`` (CUDA with triton; any device under
    ``TRITON_INTERPRET=1``, which is how the tests run it)."""
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    try:
        from . import triton_rans  # noqa: F401
    except Exception:
        return False
    return True


def order_keys(values: torch.Tensor) -> torch.Tensor:
    """int64 keys in float order, -0.0 below +0.0 (as :func:`permcodec.dtypes.order_keys`)."""
    bits = _KEY_BITS[values.dtype]
    raw = values.contiguous().view(_INT_VIEW[bits]).to(torch.int64)
    return torch.where(raw < 0, raw ^ ((1 << (bits - 1)) - 1), raw)


def sort_rows(keys: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable row order of ``keys`` and the sorted keys (packed with the index when the
    keys fit 32 bits, as the CPU decoder does; the order is the same either way)."""
    m = keys.shape[1]
    if bits <= 32:
        idx = torch.arange(m, dtype=torch.int64, device=keys.device)
        packed = torch.sort((keys << 32) | idx, dim=1).values
        return packed & 0xFFFFFFFF, packed >> 32
    sorted_keys, order = torch.sort(keys, dim=1, stable=True)
    return order, sorted_keys


def decode_row_rans(entry: dict[str, Any], payload: bytes, device: torch.device) -> torch.Tensor:
    """One ``row-rans`` tensor, decoded on ``device``; checks both digests."""
    from . import triton_rans

    name, dtype = entry["name"], entry["dtype"]
    shape = tuple(entry["shape"])
    if section_digest(payload) != entry["payload_digest"]:
        raise IntegrityError(f"checksum mismatch in the payload of tensor {name!r}", name)
    spec, key, rows, m = codec._seed_fields(entry, shape, dtype)
    states, lengths, words = codec._split_segments(name, payload, entry.get("lanes"), rows, m)
    tdtype = _TORCH_DTYPE[dtype]
    if rows * m == 0:
        return to_torch(codec.decode_tensor(entry, payload), dtype, device)
    rans.check_states(states, name)

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)

    init = generate(spec, key, shape, TorchOps(device)).to(tdtype)
    keys = order_keys(init)
    order, sorted_keys = sort_rows(keys, _KEY_BITS[tdtype])
    sorted_vals = init.gather(1, order)
    new = torch.ones((rows, m), dtype=torch.bool, device=device)
    new[:, 1:] = sorted_keys[:, 1:] != sorted_keys[:, :-1]
    distinct = new.all(dim=1)
    if bool(distinct.all()):
        counts = torch.ones((rows, 1), dtype=torch.int64, device=device)  # unused
        values = sorted_vals
    else:
        cls = torch.cumsum(new.to(torch.int64), dim=1) - 1
        n = int(cls[:, -1].max()) + 1
        counts = torch.zeros((rows, n), dtype=torch.int64, device=device)
        counts.scatter_add_(1, cls, torch.ones_like(cls))
        values = torch.zeros((rows, n), dtype=tdtype, device=device).scatter_(1, cls, sorted_vals)
    starts = np.zeros(len(states) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    classes, status = triton_rans.decode_rows(
        dev(states.astype(np.int64)),
        dev(starts),
        dev(words),
        dev(rans.lane_bounds(rows, len(states))),
        distinct.to(torch.int8),
        counts,
        m,
    )
    if status == triton_rans.ENDS_EARLY:
        raise IntegrityError(f"tensor {name!r}: coded stream ends early", name)
    if status == triton_rans.INCONSISTENT:
        raise IntegrityError(f"tensor {name!r}: coded stream is inconsistent", name)
    out = values.gather(1, classes).reshape(shape)
    if section_digest(to_numpy(out)[0]) != entry["digest"]:
        raise IntegrityError(f"digest mismatch in decoded tensor {name!r}", name)
    return out
