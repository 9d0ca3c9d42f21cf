"""Decode ``row-rans`` tensors on a torch device: generate, sort, entropy-decode and
gather all run there (the entropy decoder is :mod:`permcodec.kernels.rans_triton`);
only the payload goes to the device, and the decoded tensor's bytes come back once for
its digest.

Used by :func:`permcodec.torch.load` on CUDA devices when triton loads; elsewhere the
CPU decoder runs and the tensors are moved. The generator, order keys and row classes
are the core's own functions run on torch (:class:`TorchOps`), so the result is
bit-identical to the CPU decoder's.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .. import kernels
from ..coding import arrangement, rans
from ..coding.row_rans import RowRans, split_segments
from ..core.dtypes import order_keys
from ..core.initializers import generate
from ..errors import IntegrityError
from ..format.container import section_digest
from ..format.entry import Entry
from ..format.reader import decode_entry
from ..kernels.contract import raise_for
from .ops import TorchOps, to_numpy, to_torch, torch_dtype


def usable(entry: Entry, device: torch.device) -> bool:
    """Whether ``entry`` can be decoded on ``device``: a ``row-rans`` tensor, on CUDA
    with triton (or on any device under ``TRITON_INTERPRET=1``, how the tests run it)."""
    if not isinstance(entry.codec, RowRans):
        return False
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    return kernels.load("rans_triton") is not None


def decode(entry: Entry, payload: bytes, device: torch.device) -> torch.Tensor:
    """One ``row-rans`` tensor, decoded on ``device``; checks both digests."""
    triton_rans = kernels.load("rans_triton")
    meta, seed = entry.meta, entry.params.seed
    name, rows, m = meta.name, seed.rows, seed.m
    if section_digest(payload) != entry.payload_digest:
        raise IntegrityError(f"checksum mismatch in the payload of tensor {name!r}", name)
    states, lengths, words = split_segments(name, payload, entry.params.lanes, rows, m)
    if rows * m == 0 or triton_rans is None:
        return to_torch(decode_entry(entry, payload), meta.dtype, device)
    rans.check_states(states, name)

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)

    xp = TorchOps(device)
    init = generate(seed.spec, seed.key, meta.shape, xp).to(torch_dtype(meta.dtype))
    rc = arrangement.row_classes(init, order_keys(init, meta.dtype, xp), xp)
    counts = rc.counts
    if rc.distinct:
        distinct = torch.ones(rows, dtype=torch.int8, device=device)
        counts = torch.ones((rows, 1), dtype=torch.int64, device=device)  # unused
    elif counts.shape[1] == m:
        distinct = (counts == 1).all(dim=1).to(torch.int8)
    else:
        distinct = torch.zeros(rows, dtype=torch.int8, device=device)
    starts = np.zeros(len(states) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    classes, status = triton_rans.decode_rows(
        dev(states.astype(np.int64)),
        dev(starts),
        dev(words),
        dev(rans.lane_bounds(rows, len(states))),
        distinct,
        counts,
        m,
    )
    raise_for(status, name)
    out = rc.values.gather(1, classes).reshape(meta.shape)
    if section_digest(to_numpy(out)[0]) != entry.digest:
        raise IntegrityError(f"digest mismatch in decoded tensor {name!r}", name)
    return out
