"""LaPerm: train a network by reconnecting its seeded random weights.

A wrapper around any torch optimizer. The inner optimizer trains as usual; every k
steps each permuted row is synchronized: its weights are ranked and each one is
replaced by the initial value of the same rank. After a sync every row holds exactly
its initial multiset, so the model is losslessly storable by :func:`permcodec.save`.
Qiu & Suda, "Train-by-Reconnect", NeurIPS 2020.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from . import accel, arrangement, buckets
from .buckets import MAX_BITS
from .codec import init_rows
from .dtypes import order_keys
from .errors import PlanError
from .initializers import row_shape
from .plan import Plan, TensorPlan
from .torch import PLAN_ATTR, format_dtype, generate_torch, unwrap

SyncPeriod = int | Callable[[int], int]

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, weakref.ref[LaPerm]] = weakref.WeakKeyDictionary()


def rank_order(w: torch.Tensor) -> torch.Tensor:
    """Each row's stable argsort (ties by position), as ``torch.argsort(stable=True)``
    gives it. On CPU float32 rows without NaN, numpy's SIMD sort of (order key, index)
    packed into one int64 gives the same order about 3x faster (-0.0 is first made
    +0.0, which torch ranks equal to it)."""
    m = w.shape[1]
    if w.device.type == "cpu" and w.dtype == torch.float32 and w.numel() and m < 1 << 31:
        a = (w.detach() + 0.0).numpy()
        if not np.isnan(a).any():
            bits = a.view(np.int32)
            packed = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)
            packed <<= 32
            packed |= np.arange(m, dtype=np.int64)
            packed.sort(axis=1)
            packed &= 0xFFFFFFFF
            return torch.from_numpy(packed)
    return torch.argsort(w, dim=1, stable=True)


def _sync_in_place(t: _Target) -> bool:
    """The plain sync of a contiguous CPU float32 parameter with the numba kernels of
    :mod:`permcodec.sync_fast`, written in place; False where they do not apply."""
    p = t.param
    if p.device.type != "cpu" or p.dtype != torch.float32 or not p.is_contiguous():
        return False
    fast = accel.kernels("sync_fast")
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


@dataclass
class _Target:
    """A permuted parameter and its initial values, sorted per row."""

    name: str
    param: nn.Parameter
    sorted_init: torch.Tensor  # (rows, m) in the parameter's dtype and device
    rows: int
    m: int
    bucket_of_rank: torch.Tensor | None = None  # (rows, m) with bits: bucket of each rank
    init_rank: torch.Tensor | None = None  # (rows, m) with bits: rank of each init value
    latent: torch.Tensor | None = None  # with bits: the weights being trained


class LaPerm(Optimizer):
    """Lookahead permutation around an inner optimizer (Adam, AdamW, SGD, ...).

    ``LaPerm(model, torch.optim.Adam(model.parameters(), 1e-3), sync_period=20)``.
    ``sync_period`` is an int k, or a callable giving k from the epoch
    (``schedule_by="epoch"``, set with :meth:`set_epoch`) or from the step count
    (``schedule_by="step"``). Parameters outside the model's plan (norm layers,
    biases unless seeded) train normally. ``reset_state=True`` clears the inner
    optimizer's state of permuted parameters at each sync (kept by default, as the
    reference implementation does). ``param_groups``, ``zero_grad``, ``state_dict``
    and ``load_state_dict`` behave like a torch optimizer's, so LR schedulers and
    resumable checkpoints work.
    """

    def __init__(
        self,
        model: nn.Module,
        inner: Optimizer,
        sync_period: SyncPeriod = 20,
        *,
        schedule_by: str = "epoch",
        reset_state: bool = False,
        plan: Plan | None = None,
        bits: int | None = None,
    ) -> None:
        if not isinstance(inner, Optimizer):
            raise TypeError(f"inner must be a torch.optim.Optimizer, got {type(inner).__name__}")
        if schedule_by not in ("epoch", "step"):
            raise ValueError("schedule_by must be 'epoch' or 'step'")
        if not callable(sync_period) and (not isinstance(sync_period, int) or sync_period < 1):
            raise ValueError(
                f"sync_period must be a positive int or a callable, got {sync_period!r}"
            )
        if bits is not None and not (isinstance(bits, int) and 1 <= bits <= MAX_BITS):
            raise ValueError(f"bits must be None or an int in 1..{MAX_BITS}, got {bits!r}")
        base = unwrap(model)
        plan = plan if plan is not None else getattr(base, PLAN_ATTR, None)
        if plan is None:
            raise PlanError(
                "the model has no permcodec plan: call permcodec.init(model, seed) "
                "before creating LaPerm"
            )
        if bits is not None:
            plan.bits = bits  # saving then codes the buckets, which loses nothing
        self.bits = bits
        self.inner = inner
        self.sync_period = sync_period
        self.schedule_by = schedule_by
        self.reset_state = reset_state
        self.plan = plan
        self.epoch = 0
        self.steps = 0
        self.steps_since_sync = 0
        self.syncs = 0
        self._targets = self._build_targets(base, plan, inner, bits)
        params = [p for g in inner.param_groups for p in g["params"]]
        super().__init__(params, dict(inner.defaults))
        self._alias_inner()
        _ACTIVE[base] = weakref.ref(self)

    @staticmethod
    def _build_targets(
        model: nn.Module, plan: Plan, inner: Optimizer, bits: int | None
    ) -> list[_Target]:
        named = dict(model.named_parameters())
        in_inner = {id(p) for g in inner.param_groups for p in g["params"]}
        targets = []
        for name, tp in plan.tensors.items():
            p = named.get(name)
            if p is None:
                raise PlanError(f"plan names {name!r}, which is not a parameter of the model")
            if id(p) not in in_inner:
                raise PlanError(f"parameter {name!r} is in the plan but not in the inner optimizer")
            shape = tuple(p.shape)
            rows, m = row_shape(shape, tp.spec["granularity"])
            with torch.no_grad():
                init = generate_torch(tp, shape, p.dtype, p.device).reshape(rows, m)
                sorted_init = torch.sort(init, dim=1).values
            target = _Target(name, p, sorted_init, rows, m)
            if bits is not None:
                target.bucket_of_rank, target.init_rank = _bucket_tables(tp, shape, p, bits)
                target.latent = p.detach().clone()
            targets.append(target)
        return targets

    def _alias_inner(self) -> None:
        """Share the inner optimizer's groups and state, so schedulers reach it."""
        self.param_groups = self.inner.param_groups
        self.state = self.inner.state
        self.defaults = self.inner.defaults

    def set_epoch(self, epoch: int) -> None:
        """Tell an epoch-based ``sync_period`` schedule which epoch is running."""
        self.epoch = int(epoch)

    def current_period(self) -> int:
        """The sync period k in force now."""
        if not callable(self.sync_period):
            return self.sync_period
        k = self.sync_period(self.epoch if self.schedule_by == "epoch" else self.steps)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"sync_period schedule returned {k!r}; it must be a positive int")
        return k

    @staticmethod
    def _placed(t: _Target, w: torch.Tensor, buckets_only: bool) -> torch.Tensor:
        """Row-wise rank sync of ``w``: the same-rank initial value in every weight, or
        with ``buckets_only`` the bucketed form (bucket by rank, then initial-rank
        order inside each bucket, as the decoder rebuilds it)."""
        order = rank_order(w.detach().reshape(t.rows, t.m))
        if buckets_only and t.bucket_of_rank is not None and t.init_rank is not None:
            bucket = torch.empty_like(order).scatter_(1, order, t.bucket_of_rank)
            order = _order_of_keys(bucket * t.m + t.init_rank)
        placed = torch.empty_like(t.sorted_init).scatter_(1, order, t.sorted_init)
        return placed.reshape(t.param.shape)

    @torch.no_grad()
    def _snap(self) -> None:
        """Sync every permuted row; with bits, sync the latent weights and show the
        network their bucketed form."""
        for t in self._targets:
            if t.latent is None:
                if not _sync_in_place(t):
                    t.param.copy_(self._placed(t, t.param, False))
            else:
                t.latent.copy_(self._placed(t, t.latent, False))
                t.param.copy_(self._placed(t, t.latent, True))

    def sync(self) -> None:
        """Synchronize now: every permuted row becomes its init, rearranged by rank."""
        self._snap()
        if self.reset_state:
            for t in self._targets:
                self.inner.state.pop(t.param, None)
        self.steps_since_sync = 0
        self.syncs += 1

    @contextlib.contextmanager
    def synced(self) -> Iterator[None]:
        """Temporarily show the model as a sync would leave it (e.g. to evaluate the
        network that would be stored), then restore the weights being trained."""
        if self.in_sync:
            yield
            return
        saved = [t.param.detach().clone() for t in self._targets]
        with torch.no_grad():
            for t in self._targets:
                src = t.param if t.latent is None else t.latent
                t.param.copy_(self._placed(t, src, t.latent is not None))
        try:
            yield
        finally:
            with torch.no_grad():
                for t, w in zip(self._targets, saved, strict=True):
                    t.param.copy_(w)

    @property
    def in_sync(self) -> bool:
        """True when every permuted row holds exactly its initial values."""
        return self.steps_since_sync == 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One inner step; a sync when k steps have passed since the last one.

        With bits, the gradient was taken at the bucketed weights the network shows;
        the step updates the latent weights, and the network keeps showing the last
        sync's bucketed form until the next sync (a straight-through estimate).
        """
        loss = self.inner.step(closure) if self.bits is None else self._latent_step(closure)
        self.steps += 1
        self.steps_since_sync += 1
        if self.steps_since_sync >= self.current_period():
            self.sync()
        return loss

    @torch.no_grad()
    def _latent_step(self, closure: Callable[[], Any] | None) -> Any:
        for t in self._targets:
            t.param.copy_(t.latent)
        loss = self.inner.step(closure)
        for t in self._targets:
            t.latent.copy_(t.param)
            t.param.copy_(self._placed(t, t.latent, True))
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            "inner": self.inner.state_dict(),
            "laperm": {
                "steps": self.steps,
                "steps_since_sync": self.steps_since_sync,
                "syncs": self.syncs,
                "epoch": self.epoch,
                "bits": self.bits,
                "latent": [t.latent.clone() for t in self._targets if t.latent is not None],
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if set(state_dict) != {"inner", "laperm"}:
            raise ValueError("not a LaPerm state dict (expected keys 'inner' and 'laperm')")
        self.inner.load_state_dict(state_dict["inner"])
        lp = state_dict["laperm"]
        self.steps, self.steps_since_sync = int(lp["steps"]), int(lp["steps_since_sync"])
        self.syncs, self.epoch = int(lp["syncs"]), int(lp["epoch"])
        if lp.get("bits") != self.bits:
            raise ValueError(
                f"state dict is for bits={lp.get('bits')}, this LaPerm has {self.bits}"
            )
        latent = list(lp.get("latent", []))
        if self.bits is not None:
            if len(latent) != len(self._targets):
                raise ValueError("state dict holds no latent weights for every permuted tensor")
            with torch.no_grad():
                for t, w in zip(self._targets, latent, strict=True):
                    t.latent.copy_(w)
        self._alias_inner()

    def __repr__(self) -> str:
        k = self.sync_period if not callable(self.sync_period) else "schedule"
        bits = f", bits={self.bits}" if self.bits is not None else ""
        return f"LaPerm(sync_period={k}{bits}, tensors={len(self._targets)}, inner={self.inner!r})"


def _bucket_tables(
    tp: TensorPlan, shape: tuple[int, ...], p: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket of each sorted rank and initial rank of each position, from the numpy
    core (the same tables the decoder derives), on the parameter's device."""
    dtype = format_dtype(p.dtype)
    init = init_rows(tp.spec, tp.key, shape, dtype)
    rc = arrangement.row_classes(init, order_keys(init, dtype))
    init_cls = arrangement.classes_of(order_keys(init, dtype), rc)
    bk = buckets.bucketize(rc, init_cls, bits)
    bucket_of_rank = np.take_along_axis(bk.class_bucket, rc.class_of_sorted, axis=1)
    return (
        torch.from_numpy(bucket_of_rank).to(p.device),
        torch.from_numpy(bk.init_rank).to(p.device),
    )


def sync_pending(model: nn.Module) -> None:
    """Sync ``model`` if a LaPerm optimizer has stepped it since its last sync.

    Called by :func:`permcodec.save` so that saving a LaPerm-trained model is lossless.
    """
    ref = _ACTIVE.get(unwrap(model))
    opt = ref() if ref is not None else None
    if opt is not None and not opt.in_sync:
        opt.sync()
