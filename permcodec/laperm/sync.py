"""LaPerm's sync: rank every weight of a row and put the initial value of the same rank
in its place (or, trained at b bits, the bucketed form the decoder rebuilds).

The ranking is torch's stable argsort; on CPU float32 rows numpy's SIMD sort of packed
(order key, index) words gives the same order faster, and the C kernels of
:mod:`permcodec.kernels.sync_c` (csrc/laperm_sync.c) rank and place in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import kernels
from ..coding import arrangement, buckets
from ..core.dtypes import order_keys
from ..core.initializers import generate, initial_rows, resolve
from ..core.plan import TensorPlan
from ..kernels.contract import order_key
from ..torch import TorchOps, format_dtype


@dataclass
class Target:
    """A permuted parameter and its initial values, sorted per row."""

    name: str
    param: nn.Parameter
    sorted_init: torch.Tensor  # (rows, m) in the parameter's dtype and device
    rows: int
    m: int
    bucket_of_rank: torch.Tensor | None = None  # (rows, m) with bits: bucket of each rank
    init_rank: torch.Tensor | None = None  # (rows, m) with bits: rank of each init value
    latent: torch.Tensor | None = None  # with bits or a latent plan: the weights trained
    free: bool = False  # the latent is never synced (latent plan entries)


def rank_order(w: torch.Tensor) -> torch.Tensor:
    """Each row's stable argsort (ties by position), as ``torch.argsort(stable=True)``
    gives it. On CPU float32 rows without NaN, numpy's SIMD sort of (order key, index)
    packed into one int64 gives the same order about 3x faster (-0.0 is first made
    +0.0, which torch ranks equal to it)."""
    m = w.shape[1]
    if w.device.type == "cpu" and w.dtype == torch.float32 and w.numel() and m < 1 << 31:
        a = (w.detach() + 0.0).numpy()
        if not np.isnan(a).any():
            packed = order_key(a.view(np.int32).astype(np.int64), 32)
            packed <<= 32
            packed |= np.arange(m, dtype=np.int64)
            packed.sort(axis=1)
            packed &= 0xFFFFFFFF
            return torch.from_numpy(packed)
    return torch.argsort(w, dim=1, stable=True)


def sync_in_place(t: Target) -> bool:
    """The plain sync of a contiguous CPU float32 parameter with the C kernels,
    written in place; False where they do not apply."""
    p = t.param
    if p.device.type != "cpu" or p.dtype != torch.float32 or not p.is_contiguous():
        return False
    fast = kernels.load("sync_c")
    if fast is None or t.sorted_init.dtype != torch.float32:
        return False
    if t.m > fast.MAX_M:
        return False
    rows = p.detach().view(t.rows, t.m).numpy()
    b = fast.index_bits(t.m)
    packed, ok = fast.pack(rows, b)
    if not ok:  # NaN: torch's order
        return False
    packed.sort(axis=1)
    fast.place(packed, b, t.sorted_init.contiguous().numpy(), rows)
    return True


def _order_of_keys(keys: torch.Tensor) -> torch.Tensor:
    """Argsort of distinct int64 keys per row (numpy's SIMD sort on CPU)."""
    if keys.device.type == "cpu":
        return torch.from_numpy(arrangement.argsort_rows(keys.numpy()))
    return torch.argsort(keys, dim=1)


def placed(t: Target, w: torch.Tensor, buckets_only: bool) -> torch.Tensor:
    """Row-wise rank sync of ``w``: the same-rank initial value in every weight, or
    with ``buckets_only`` the bucketed form (bucket by rank, then initial-rank order
    inside each bucket, as the decoder rebuilds it)."""
    order = rank_order(w.detach().reshape(t.rows, t.m))
    if buckets_only and t.bucket_of_rank is not None and t.init_rank is not None:
        bucket = torch.empty_like(order).scatter_(1, order, t.bucket_of_rank)
        order = _order_of_keys(bucket * t.m + t.init_rank)
    out = torch.empty_like(t.sorted_init).scatter_(1, order, t.sorted_init)
    return out.reshape(t.param.shape)


def bucket_tables(
    tp: TensorPlan, shape: tuple[int, ...], p: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket of each sorted rank and initial rank of each position, from the numpy
    core (the same tables the decoder derives), on the parameter's device."""
    dtype = format_dtype(p.dtype)
    init = initial_rows(tp.spec, tp.key, shape, dtype)
    rc, init_cls = arrangement.init_classes(init, order_keys(init, dtype))
    bk = buckets.bucketize(rc, init_cls, bits)
    bucket_of_rank = np.take_along_axis(bk.class_bucket, rc.class_of_sorted, axis=1)
    return (
        torch.from_numpy(bucket_of_rank).to(p.device),
        torch.from_numpy(bk.init_rank).to(p.device),
    )


def latent_start(tp: TensorPlan, shape: tuple[int, ...], init: torch.Tensor) -> torch.Tensor:
    """The latent weights a ``latent`` plan entry starts from: continuous He-uniform
    values of its rows (from its own stream), placed in the rank order of its init
    (``init`` as (rows, m); ties in position order), so the network shows the init."""
    rows, m = init.shape
    ref = generate(resolve("he_uniform", shape), tp.key, shape, TorchOps(init.device))
    ref = torch.sort(ref.to(init.dtype).reshape(rows, m), dim=1).values
    out = torch.empty_like(ref).scatter_(1, rank_order(init), ref)
    return out.reshape(shape)
