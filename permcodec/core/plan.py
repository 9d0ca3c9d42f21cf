"""The plan: which tensors are seeded, with which spec and stream key.

It travels as a plain dict (only str, int, float, bool, list, dict) so that it fits
in a ``torch.save`` checkpoint that loads with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import PlanError
from . import philox
from .checks import is_int
from .initializers import check_resolved, resolve

PLAN_FORMAT = "permcodec-plan"
PLAN_VERSION = 1
#: Deepest rank buckets a plan (and a ``bucket-rans`` tensor) may ask for: 2**8 per row.
MAX_BITS = 8


@dataclass(frozen=True)
class TensorPlan:
    """How one permuted tensor was initialized, and how LaPerm trains it: by syncing
    the weights every k steps (the paper's lookahead), or, with ``latent``, through a
    continuous latent copy whose ranks place the stored values at every step (a
    straight-through estimate; the rate-controlled forms of :mod:`permcodec.coding.rate`
    train this way)."""

    spec: dict[str, Any]
    key: tuple[int, int]
    latent: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spec": dict(self.spec), "key": list(self.key)}
        if self.latent:
            out["latent"] = True
        return out


@dataclass
class Plan:
    """Seed and per-tensor initializer specs of a model."""

    seed: int
    tensors: dict[str, TensorPlan] = field(default_factory=dict)
    #: Rank-bucket depth the model is kept at (``LaPerm(bits=b)``); None: exact ranks.
    bits: int | None = None
    #: The rate the plan was allocated for (``init(..., bpw=R)``), in bits per weight.
    bpw: float | None = None

    def add(
        self, name: str, spec: Any, shape: tuple[int, ...], *, latent: bool = False
    ) -> TensorPlan:
        """Resolve ``spec`` for ``shape`` and give the tensor its own stream."""
        key = philox.stream_key(self.seed, name)
        tp = TensorPlan(resolve(spec, shape), key, latent)
        self.tensors[name] = tp
        return tp

    def to_dict(self) -> dict[str, Any]:
        out = {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "seed": self.seed,
            "tensors": {k: v.to_dict() for k, v in self.tensors.items()},
            "bits": self.bits,
        }
        if self.bpw is not None:
            out["bpw"] = self.bpw
        return out

    @classmethod
    def from_dict(cls, d: Any) -> Plan:
        if not isinstance(d, dict) or d.get("format") != PLAN_FORMAT:
            raise PlanError("not a permcodec plan (missing 'format': 'permcodec-plan')")
        if not is_int(d.get("version")) or not 1 <= d["version"] <= PLAN_VERSION:
            raise PlanError(f"plan version {d.get('version')} is newer than this permcodec")
        seed = d.get("seed")
        if not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise PlanError(f"plan seed must be an integer in [0, 2**64), got {seed!r}")
        bits = d.get("bits")
        if bits is not None and not (is_int(bits) and 1 <= bits <= MAX_BITS):
            raise PlanError(f"plan bits must be None or in 1..{MAX_BITS}, got {bits!r}")
        bpw = d.get("bpw")
        if bpw is not None and not (isinstance(bpw, (int, float)) and bpw > 0):
            raise PlanError(f"plan bpw must be None or a positive number, got {bpw!r}")
        plan = cls(seed, bits=bits, bpw=None if bpw is None else float(bpw))
        for name, t in dict(d.get("tensors", {})).items():
            try:
                spec = dict(t["spec"])
                key = tuple(t["key"])
                latent = t.get("latent", False)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise PlanError(f"plan entry for {name!r} is malformed: {e}") from None
            check_resolved(spec)
            if len(key) != 2 or not all(is_int(k) and 0 <= k < 2**32 for k in key):
                raise PlanError(f"plan entry for {name!r} has a bad stream key")
            if not isinstance(latent, bool):
                raise PlanError(f"plan entry for {name!r}: latent must be true or false")
            plan.tensors[name] = TensorPlan(spec, key, latent)  # type: ignore[arg-type]
        return plan
