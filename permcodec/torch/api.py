"""permcodec for PyTorch: seed a module's weights, save it as `.perm`, load it back.

``init`` re-initializes the permutable parameters of a module from a seed and records
the plan on the module; ``save``/``load`` move between modules (or state dicts) and
`.perm` files; ``save_checkpoint``/``load_checkpoint`` write and read plain
``torch.save`` files that load with ``weights_only=True``. A trainer that keeps the
stored form of the weights apart from the weights it trains (LaPerm between syncs)
tells ``save`` about it with :func:`register_stored_view`.
"""

from __future__ import annotations

import json
import math
import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..coding.rate import allocate
from ..core.approximate import Approximation, approximate_items, fill_errors
from ..core.initializers import InitSpec, as_spec, fans, row_shape
from ..core.plan import Plan
from ..core.version import __version__
from ..errors import PermcodecError, PlanError, UnsafeCheckpointError
from ..format.atomic import atomic_path
from ..format.reader import ALIASES_KEY, PermFile, Source
from ..format.recode import bucket_depths, plan_depths
from ..format.writer import write_file
from . import device_decode
from .calibrate import holding, loss_increase
from .ops import device_of, generate_torch, to_numpy, to_torch

PLAN_ATTR = "permcodec_plan"
PERMUTED_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# ---------------------------------------------------------------- init

SpecLike = str | InitSpec | Mapping[str, Any]


#: Matrices of other modules that ``init`` seeds: the packed (or separate) Q/K/V
#: projection of attention, and embedding tables. A row is, as for Linear, one output
#: unit's fan-in (``weight.flatten(1)[o]``): a projection unit's inputs, one token's
#: (or position's) vector.
MATRIX_PARAMS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.MultiheadAttention: ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"),
    nn.Embedding: ("weight",),
    nn.EmbeddingBag: ("weight",),
}


def default_targets(model: nn.Module, biases: bool = False) -> list[tuple[str, nn.Parameter, str]]:
    """(name, parameter, role) of what ``init`` permutes by default: the weights of
    Linear and Conv layers, attention's Q/K/V projections and embedding tables
    (:data:`MATRIX_PARAMS`), and Linear/Conv biases when ``biases`` is true. A tied
    parameter appears once, under its first name. Normalization layers and buffers are
    never included; other 2-D parameters are seeded when named in ``init``'s
    ``overrides``."""
    out, seen = [], set()
    for mod_name, mod in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        names = [("weight", "weight")] if isinstance(mod, PERMUTED_MODULES) else []
        for cls, attrs in MATRIX_PARAMS.items():
            if isinstance(mod, cls):
                names += [(a, "weight") for a in attrs]
        if biases and isinstance(mod, PERMUTED_MODULES):
            names.append(("bias", "bias"))
        for attr, role in names:
            p = getattr(mod, attr, None)
            if isinstance(p, nn.Parameter) and id(p) not in seen:
                seen.add(id(p))
                out.append((prefix + attr, p, role))
    return out


def _bias_spec(weight_shape: tuple[int, ...]) -> InitSpec:
    """torch's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) of the weight."""
    bound = 1.0 / math.sqrt(max(fans(weight_shape)[0], 1))
    return InitSpec("uniform", a=-bound, b=bound)


def init(
    model: nn.Module,
    seed: int,
    scheme: SpecLike | Callable[[str, torch.Tensor], Any] = "he_uniform",
    *,
    biases: bool = False,
    density: float | None = None,
    granularity: str | None = None,
    overrides: Mapping[str, SpecLike | None] | None = None,
    min_row: int = 0,
    bpw: float | None = None,
    sensitivity: Mapping[str, float] | str = "weights",
) -> Plan:
    """Re-initialize ``model``'s permutable weights from ``seed`` and record the plan.

    ``bpw=R`` names a size instead of a scheme: every weight matrix gets the form
    (:mod:`permcodec.coding.rate`) that spends the rate where it loses least, so that
    the saved file's weight matrices cost at most R bits per weight, container
    included, whatever training does (biases and norm layers stay exact and are
    counted apart). LaPerm then trains those matrices through latent weights.
    ``sensitivity`` weighs each matrix's share of the distortion: ``"weights"`` (the
    default: its number of weights, so every weight counts alike and every matrix gets
    about one rate), ``"rows"`` (its number of rows: longer rows get fewer bits per
    weight, 0.3-0.4 points better on LeNet-300-100, 0.9 worse on ResNet-20) or a mapping
    name -> weight over the default's.

    ``scheme`` is a name (``"he_uniform"``, ``"glorot_normal"``, ``"binary"``...), an
    :class:`InitSpec`, or a callable ``(name, param) -> spec | None``. ``density`` makes
    every row keep exactly that fraction of non-zeros; ``granularity`` is ``"row"``
    (default, ``weight.flatten(1)[o]``) or ``"tensor"``. ``overrides`` maps parameter
    names to specs (``None`` leaves that parameter out). ``min_row`` leaves out
    parameters whose rows hold fewer values (they train normally and are stored
    exactly): very short rows, such as a 1x5x5 first conv, have too few arrangements
    to learn by permutation. Returns the :class:`Plan`, also stored as
    ``model.permcodec_plan``.
    """
    model = unwrap(model)
    plan = Plan(int(seed)) if isinstance(seed, (int, np.integer)) else None
    if plan is None:
        raise PlanError(f"seed must be an integer, got {type(seed).__name__}")
    if density is not None and not density > 0:
        raise PlanError(f"density {density!r} leaves every seeded weight zero; use (0, 1]")
    if bpw is not None:
        given = {"scheme": scheme != "he_uniform", "biases": biases, "density": density,
                 "granularity": granularity, "overrides": overrides, "min_row": min_row}  # fmt: skip
        clash = [k for k, v in given.items() if v]
        if clash:
            raise PlanError(f"bpw= chooses each matrix's init itself; drop {', '.join(clash)}=")
        return _init_at_rate(model, plan, float(bpw), sensitivity)
    overrides = dict(overrides or {})
    weight_shapes = {
        n.rsplit(".", 1)[0]: tuple(p.shape) for n, p, r in default_targets(model) if r == "weight"
    }
    targets = {n: (p, r) for n, p, r in default_targets(model, biases)}
    params = dict(model.named_parameters())
    for name in overrides:
        if name not in params:
            raise PlanError(f"override names {name!r}, which is not a parameter of the model")
        if name not in targets:
            targets[name] = (params[name], "weight")
    with torch.no_grad():
        for name, (p, role) in targets.items():
            if name in overrides:
                spec = overrides[name]
            elif callable(scheme):
                spec = scheme(name, p)
            elif role == "bias":
                spec = _bias_spec(weight_shapes.get(name.rsplit(".", 1)[0], tuple(p.shape)))
            else:
                spec = scheme
            if spec is None:
                continue
            spec = _with(
                as_spec(spec if not isinstance(spec, Mapping) else dict(spec)), density, granularity
            )
            if name not in overrides and row_shape(tuple(p.shape), spec.granularity)[1] < min_row:
                continue
            if p.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
                raise PlanError(
                    f"parameter {name!r} has dtype {p.dtype}; only floating point "
                    "parameters can be seeded"
                )
            tp = plan.add(name, spec, tuple(p.shape))
            p.copy_(generate_torch(tp, tuple(p.shape), p.dtype, p.device))
    _attach(model, plan)
    return plan


def _init_at_rate(
    model: nn.Module, plan: Plan, bpw: float, sensitivity: Mapping[str, float] | str
) -> Plan:
    """:func:`init` with ``bpw``: a form per weight matrix from the rate allocator."""
    weights = {n: p for n, p, role in default_targets(model) if role == "weight"}
    if isinstance(sensitivity, str) and sensitivity not in ("rows", "weights"):
        raise PlanError(f"sensitivity must be 'rows', 'weights' or a mapping, got {sensitivity!r}")
    if sensitivity == "rows":
        sens = {n: float(p.shape[0]) for n, p in weights.items()}
    else:  # weights, and a mapping over them
        sens = {n: float(p.numel()) for n, p in weights.items()}
        sens.update({} if isinstance(sensitivity, str) else sensitivity or {})
    try:
        alloc = allocate({n: tuple(p.shape) for n, p in weights.items()}, bpw, sens)
    except ValueError as e:
        raise PlanError(str(e)) from None
    with torch.no_grad():
        for name, form in alloc.forms.items():
            p = weights[name]
            spec = form.spec(tuple(p.shape))
            if spec is None:
                continue  # trained as is, stored exactly
            tp = plan.add(name, spec, tuple(p.shape), latent=True)
            p.copy_(generate_torch(tp, tuple(p.shape), p.dtype, p.device))
    plan.bpw = bpw
    _attach(model, plan)
    return plan


def _with(spec: InitSpec, density: float | None, granularity: str | None) -> InitSpec:
    if density is None and granularity is None:
        return spec
    return InitSpec(
        spec.kind,
        density=spec.density if density is None else density,
        granularity=granularity or spec.granularity,
        **spec.params,
    )


# ---------------------------------------------------------------- save / load


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers and
    ``torch.compile``'s OptimizedModule."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


#: The key of the plan in a state dict's metadata (``state_dict._metadata[prefix]``).
PLAN_METADATA = "permcodec_plan"
_TRACKED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _attach(model: nn.Module, plan: Plan) -> None:
    """Record ``plan`` on ``model`` and have its state dicts carry it in their metadata
    (so it travels through ``torch.save(model.state_dict())``)."""
    setattr(model, PLAN_ATTR, plan)
    if model not in _TRACKED:
        model.register_state_dict_post_hook(_put_plan)
        _TRACKED.add(model)


def _put_plan(module: nn.Module, state_dict: Any, prefix: str, local_metadata: dict) -> None:
    plan = getattr(module, PLAN_ATTR, None)
    if isinstance(plan, Plan):
        local_metadata[PLAN_METADATA] = plan.to_dict()


def tied_names(state_dict: Mapping[str, Any]) -> dict[str, str]:
    """Names of state dict entries that are the very tensor of an earlier entry (tied
    weights, such as an output head sharing the token embedding) -> that entry's name."""
    first: dict[tuple, str] = {}
    out = {}
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor) or t.numel() == 0:
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
               tuple(t.stride()), t.dtype, t.device)  # fmt: skip
        if key in first:
            out[name] = first[key]
        else:
            first[key] = name
    return out


def plan_in_state_dict(state_dict: Mapping[str, Any]) -> tuple[Plan | None, str]:
    """The plan a state dict of a seeded model carries in its metadata (through
    ``torch.save`` and ``torch.load(weights_only=True)`` too), and the prefix of that
    model's keys (``"module."`` under DDP, ``"_orig_mod."`` under ``torch.compile``)."""
    meta = getattr(state_dict, "_metadata", None)
    if not isinstance(meta, Mapping):
        return None, ""
    for prefix, local in meta.items():
        if isinstance(local, Mapping) and PLAN_METADATA in local:
            return Plan.from_dict(local[PLAN_METADATA]), f"{prefix}." if prefix else ""
    return None, ""


StoredView = Callable[[], Mapping[str, torch.Tensor]]
_STORED_VIEWS: weakref.WeakKeyDictionary[nn.Module, StoredView] = weakref.WeakKeyDictionary()


def register_stored_view(model: nn.Module, view: StoredView) -> None:
    """Have :func:`save` and :func:`save_checkpoint` store ``view()`` (state dict names
    to tensors) in place of those entries of ``model``'s state dict, without touching
    the model: LaPerm registers the synced form of weights that have stepped since the
    last sync. A later registration replaces an earlier one."""
    _STORED_VIEWS[unwrap(model)] = view


def stored_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict as it would be stored (see :func:`register_stored_view`)."""
    model = unwrap(model)
    sd = model.state_dict()
    view = _STORED_VIEWS.get(model)
    if view is not None:
        sd.update(view())
    return sd


def _state_and_plan(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    plan: Plan | Mapping[str, Any] | None,
    required: bool = True,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], Plan]:
    if isinstance(model_or_state_dict, nn.Module):
        model = unwrap(model_or_state_dict)
        sd = stored_state_dict(model)
        plan = plan if plan is not None else getattr(model, PLAN_ATTR, None)
    elif isinstance(model_or_state_dict, Mapping):
        sd = dict(model_or_state_dict)
        if plan is None:
            plan, prefix = plan_in_state_dict(model_or_state_dict)
            if prefix:  # the seeded model sat inside a wrapper: store its own names
                sd = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
    else:
        raise TypeError(
            f"expected an nn.Module or a state dict, got {type(model_or_state_dict).__name__}"
        )
    if plan is None and not required:
        plan = Plan(seed)
    if plan is None:
        raise PlanError(
            "no permcodec plan: initialize the model with permcodec.init(model, seed) (to "
            "load trained weights into a fresh model, init it with the same seed first, or "
            "save the state dict itself: it carries the plan), pass plan=, or approximate a "
            "model trained without LaPerm (approximate=True)"
        )
    if not isinstance(plan, Plan):
        plan = Plan.from_dict(dict(plan))
    return sd, plan


def save(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    plan: Plan | Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
    bits: int | None = None,
    approximate: bool = False,
    seed: int = 0,
    bpw: float | None = None,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[Approximation]:
    """Write a model (or state dict) to a `.perm` file, atomically.

    Seeded tensors must be exact arrangements of their initialization (else
    :class:`permcodec.NotAnArrangementError` names the tensor and row). They are
    stored losslessly unless ``bits`` (default: the plan's, set by
    ``LaPerm(..., bits=b)``) asks for rank buckets only; a tensor that this changes
    triggers a :class:`permcodec.LossyWarning` with its relative L2 error. ``bpw``
    re-codes a lossless model at that many bits per weight (weight matrices, container
    included): each seeded matrix keeps the rank-bucket depth that loses least
    (:mod:`permcodec.format.recode`): the least relative error or, given
    ``calibration`` (batches of ``(inputs, targets)``; ``loss_fn`` defaults to
    cross-entropy; all held in memory), the least rise of the model's loss on them,
    measured on the values the file stores. A model initialized
    with ``init(..., bpw=R)`` needs no ``bpw`` here: it is within R as it is.

    ``approximate=True`` also stores weight matrices outside the plan (any trained
    model: no plan needed) as rank-matched arrangements of fitted seeded values, coded
    at ``bits`` (default 8) rank buckets per tensor (``seed`` for a model without a
    plan); returns what was approximated, with errors.
    """
    sd, plan = _state_and_plan(model_or_state_dict, plan, required=not approximate, seed=seed)
    meta = {"permcodec_version": __version__, **dict(metadata or {})}
    aliases = tied_names(sd)
    if aliases:  # tied weights are stored once; the readers give every name back
        meta[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
        sd = {k: v for k, v in sd.items() if k not in aliases}

    def items():
        for name, t in sd.items():
            if not isinstance(t, torch.Tensor):
                raise PermcodecError(
                    f"state dict entry {name!r} is a {type(t).__name__}, not a tensor"
                )
            a, dt = to_numpy(t)
            yield name, a, dt

    report: list[Approximation] = []
    originals = depths = None
    tensors: Any = items()
    if approximate:
        tensors, plan, originals, depths, report = approximate_items(tensors, plan, bits)
    if bpw is not None:
        if approximate or bits is not None:
            raise PlanError("bpw= chooses the bucket depths itself; drop bits= and approximate=")
        tensors = list(tensors)
        if calibration is None:
            depths = bucket_depths(plan_depths(tensors, plan, bpw))
        elif not isinstance(model_or_state_dict, nn.Module):
            raise PlanError("calibration= measures a model's loss; pass the model")
        else:  # measured on the values the file stores (LaPerm's synced ones)
            model = unwrap(model_or_state_dict)
            params = dict(model.named_parameters())
            with holding(model, {n: sd[n] for n in plan.tensors if n in params and n in sd}):
                loss = loss_increase(model, calibration, loss_fn)
                depths = bucket_depths(plan_depths(tensors, plan, bpw, loss=loss))
    elif calibration is not None:
        raise PlanError("calibration= chooses the bucket depths of bpw=; give bpw=R too")
    header = write_file(
        path, tensors, plan, meta, bits=bits, originals=originals, tensor_bits=depths
    )
    fill_errors(report, header)
    return report


def load(
    path: Source,
    model: nn.Module | None = None,
    device: str | torch.device = "cpu",
    strict: bool = True,
    max_bytes: int | None = None,
) -> dict[str, torch.Tensor]:
    """Decode a `.perm` file (a path, its bytes or a binary file object) into a state
    dict of tensors on ``device``, verifying every checksum; ``max_bytes`` caps the
    decoded size the file may claim (:mod:`permcodec.format.limits`).

    With ``model``, also load the tensors into it as :func:`load_model` does (missing or
    unexpected keys raise when ``strict``); the state dict is returned either way.
    """
    dev = device_of(device)
    with PermFile(path, max_bytes=max_bytes) as pf:
        sd = {name: _decode_to(pf, name, dev) for name in pf}
        sd.update({alias: sd[name] for alias, name in pf.aliases().items()})
        plan = pf.plan()
    if model is not None:
        _into(model, sd, plan, strict)
    return sd


def load_model(
    model: nn.Module,
    path: Source,
    strict: bool = True,
    device: str | torch.device | None = None,
    max_bytes: int | None = None,
) -> Any:
    """Load a `.perm` file into ``model`` (as ``safetensors.torch.load_model`` does):
    returns ``(missing_keys, unexpected_keys)`` as ``load_state_dict`` does, and records
    the file's plan on the model so training can go on. Tensors are decoded on
    ``device`` (default: where the model's first parameter is)."""
    if device is None:
        first = next(unwrap(model).parameters(), None)
        device = first.device if first is not None else "cpu"
    dev = device_of(device)
    with PermFile(path, max_bytes=max_bytes) as pf:
        sd = {name: _decode_to(pf, name, dev) for name in pf}
        sd.update({alias: sd[name] for alias, name in pf.aliases().items()})
        plan = pf.plan()
    return _into(model, sd, plan, strict)


def _into(model: nn.Module, sd: dict[str, torch.Tensor], plan: Plan | None, strict: bool) -> Any:
    base = unwrap(model)
    result = base.load_state_dict(sd, strict=strict)
    if plan is not None:
        _attach(base, plan)
    return result


class TorchFile(PermFile):
    """``permcodec.open(path, framework="pt", device=...)``: a :class:`PermFile` whose
    ``get_tensor`` gives torch tensors on ``device`` (decoded there where it can be)."""

    def __init__(
        self,
        path: Source,
        strict: bool = True,
        max_bytes: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = device_of(device)
        super().__init__(path, strict=strict, max_bytes=max_bytes)

    def get_tensor(self, name: str) -> torch.Tensor:
        return _decode_to(self, name, self.device)

    tensor = get_tensor


def _decode_to(pf: PermFile, name: str, device: torch.device) -> torch.Tensor:
    """One tensor on ``device``: decoded there when it can be (``row-rans`` on CUDA,
    :mod:`permcodec.torch.device_decode`), else on the CPU and moved."""
    entry = pf.entry(name)
    if device_decode.usable(entry, device):
        return device_decode.decode(entry, pf.payload(name), device)
    return to_torch(pf.storage(name), entry.dtype, device)


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike[str], plan: Plan | Mapping[str, Any] | None = None
) -> None:
    """``torch.save({"state_dict": ..., "permcodec": plan}, path)``, atomically.

    The file loads with ``torch.load(path, weights_only=True)``.
    """
    sd, plan = _state_and_plan(model, plan)
    with atomic_path(path) as tmp:
        torch.save({"state_dict": sd, "permcodec": plan.to_dict()}, tmp)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], Plan | None]:
    """Read a ``.pt`` file with ``weights_only=True``: (state dict, plan or None).

    Accepts a permcodec checkpoint, ``{"state_dict": ...}`` or a bare state dict (whose
    metadata carries the plan of a model seeded by :func:`init`). Files that need code to
    unpickle (a whole pickled model among them) are refused with
    :class:`UnsafeCheckpointError`.
    """
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:  # torch.load raises many types on unsafe or malformed files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        whole = "torch.nn.modules" in str(e) or "Module" in first
        hint = (
            "; it holds a whole pickled model: save model.state_dict() instead"
            if whole
            else "; a whole model saved with torch.save(model) needs "
            "torch.save(model.state_dict(), path) instead"
        )
        raise UnsafeCheckpointError(
            f"{os.fspath(path)} cannot be loaded with weights_only=True (it needs unpickling "
            f"of code, or is not a torch file): {first}{hint}"
        ) from None
    if not isinstance(obj, Mapping):
        raise PermcodecError(f"{os.fspath(path)} holds a {type(obj).__name__}, not a state dict")
    plan = Plan.from_dict(obj["permcodec"]) if "permcodec" in obj else None
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise PermcodecError(f"{os.fspath(path)} does not hold a state dict of tensors")
    if plan is None:
        plan, prefix = plan_in_state_dict(sd)
        if prefix:
            return {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}, plan
    return dict(sd), plan
