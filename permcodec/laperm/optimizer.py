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
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from ..core.initializers import row_shape
from ..core.plan import MAX_BITS, Plan
from ..errors import PlanError
from ..torch import PLAN_ATTR, generate_torch, register_stored_view, unwrap
from .sync import Target, bucket_tables, latent_start, placed, sync_in_place

SyncPeriod = int | Callable[[int], int]


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
        self._latent = any(t.latent is not None for t in self._targets)
        params = [p for g in inner.param_groups for p in g["params"]]
        super().__init__(params, dict(inner.defaults))
        self._alias_inner()
        me = weakref.ref(self)
        register_stored_view(base, lambda: _stored_view(me))

    @staticmethod
    def _build_targets(
        model: nn.Module, plan: Plan, inner: Optimizer, bits: int | None
    ) -> list[Target]:
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
            target = Target(name, p, sorted_init, rows, m)
            if tp.latent:
                target.latent = latent_start(tp, shape, init)
                target.free = True
            elif bits is not None:
                target.bucket_of_rank, target.init_rank = bucket_tables(tp, shape, p, bits)
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

    @torch.no_grad()
    def _snap(self) -> None:
        """Sync every permuted row; with bits, sync the latent weights and show the
        network their bucketed form. Free latent weights are never synced: their
        tensors always show the stored values placed by the latent's ranks."""
        for t in self._targets:
            if t.latent is None:
                if not sync_in_place(t):
                    t.param.copy_(placed(t, t.param, False))
            elif not t.free:
                t.latent.copy_(placed(t, t.latent, False))
                t.param.copy_(placed(t, t.latent, True))

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
            for t, w in zip(self._targets, self.stored_form().values(), strict=True):
                t.param.copy_(w)
        try:
            yield
        finally:
            with torch.no_grad():
                for t, w in zip(self._targets, saved, strict=True):
                    t.param.copy_(w)

    @torch.no_grad()
    def stored_form(self) -> dict[str, torch.Tensor]:
        """The permuted parameters as a sync now would leave them (what
        :func:`permcodec.save` stores), computed without changing anything."""
        return {
            t.name: t.param.detach()
            if self.in_sync or t.latent is not None
            else placed(t, t.param, False)
            for t in self._targets
        }

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
        loss = self._latent_step(closure) if self._latent else self.inner.step(closure)
        self.steps += 1
        self.steps_since_sync += 1
        if self.steps_since_sync >= self.current_period():
            self.sync()
        return loss

    @torch.no_grad()
    def _latent_step(self, closure: Callable[[], Any] | None) -> Any:
        """The inner step on the latent weights, the gradient having been taken at the
        weights the network shows; then show the stored form of the new latent."""
        latent = [t for t in self._targets if t.latent is not None]
        for t in latent:
            t.param.copy_(t.latent)
        loss = self.inner.step(closure)
        for t in latent:
            t.latent.copy_(t.param)
            t.param.copy_(placed(t, t.latent, not t.free))
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
        targets = [t for t in self._targets if t.latent is not None]
        if len(latent) != len(targets):
            raise ValueError("state dict does not hold the latent weights of this LaPerm")
        with torch.no_grad():
            for t, w in zip(targets, latent, strict=True):
                t.latent.copy_(w)
        self._alias_inner()

    def __repr__(self) -> str:
        k = self.sync_period if not callable(self.sync_period) else "schedule"
        bits = f", bits={self.bits}" if self.bits is not None else ""
        return f"LaPerm(sync_period={k}{bits}, tensors={len(self._targets)}, inner={self.inner!r})"


def _stored_view(ref: weakref.ref[LaPerm]) -> Mapping[str, torch.Tensor]:
    """The registered stored view of a LaPerm's model (nothing once it is gone)."""
    opt = ref()
    return {} if opt is None else opt.stored_form()
