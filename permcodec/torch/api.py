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
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..coding.arrangement import is_arrangement
from ..coding.rate import allocate
from ..core.initializers import InitSpec, as_spec, fans, row_shape
from ..core.plan import Plan
from ..core.version import __version__
from ..errors import FormatError, PermcodecError, PlanError, UnsafeCheckpointError
from ..format import posthoc
from ..format.atomic import atomic_path
from ..format.reader import ALIASES_KEY, PermFile, Source
from ..format.recode import bucket_depths, plan_depths
from ..format.writer import write_file
from . import device_decode
from .calibrate import (
    grids_for_output_error,
    holding,
    input_hessians,
    loss_increase,
    row_importance,
)
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


#: What ``init`` seeds an embedding table with when no scheme is named: torch's own
#: N(0, 1). A table is looked up, not multiplied, so fan-based variances do not apply;
#: with Glorot's small values a post-norm transformer trains 4% worse (docs/experiments.md).
EMBEDDING_SCHEME = InitSpec("normal", mean=0.0, std=1.0)


def default_scheme(model: nn.Module) -> str:
    """The scheme ``init`` seeds ``model``'s weight matrices with when none is named:
    Glorot-uniform for a model with attention layers (a transformer; He's larger
    variance trains post-norm layers 5% worse, docs/experiments.md), He-uniform
    otherwise (MLPs, convnets). Embedding tables get :data:`EMBEDDING_SCHEME`."""
    has_attention = any(isinstance(m, nn.MultiheadAttention) for m in unwrap(model).modules())
    return "glorot_uniform" if has_attention else "he_uniform"


def _embedding_tables(model: nn.Module) -> set[int]:
    """ids of the embedding tables' weights (a table tied to a head included)."""
    kinds = (nn.Embedding, nn.EmbeddingBag)
    return {id(m.weight) for m in model.modules() if isinstance(m, kinds)}


def init(
    model: nn.Module,
    seed: int,
    scheme: SpecLike | Callable[[str, torch.Tensor], Any] = "auto",
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
    :class:`InitSpec`, or a callable ``(name, param) -> spec | None``; the default,
    ``"auto"``, is :func:`default_scheme` for weight matrices (Glorot-uniform for
    models with attention, He-uniform otherwise) and torch's N(0, 1) for embedding
    tables (:data:`EMBEDDING_SCHEME`). ``density`` makes
    every row keep exactly that fraction of non-zeros; ``granularity`` is ``"row"``
    (default, ``weight.flatten(1)[o]``) or ``"tensor"``. ``overrides`` maps parameter
    names to specs (``None`` leaves that parameter out). ``min_row`` leaves out
    parameters whose rows hold fewer values (they train normally and are stored
    exactly): very short rows, such as a 1x5x5 first conv, have too few arrangements
    to learn by permutation. Returns the :class:`Plan`, also stored as
    ``model.permcodec_plan``.
    """
    model = unwrap(model)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise PlanError(f"seed must be an integer, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**64:
        raise PlanError(f"seed must be an integer in [0, 2**64), got {int(seed)}")
    plan = Plan(int(seed))
    if density is not None and not density > 0:
        raise PlanError(f"density {density!r} leaves every seeded weight zero; use (0, 1]")
    if bpw is not None:
        given = {"scheme": scheme != "auto", "biases": biases, "density": density,
                 "granularity": granularity, "overrides": overrides, "min_row": min_row}  # fmt: skip
        clash = [k for k, v in given.items() if v]
        if clash:
            raise PlanError(f"bpw= chooses each matrix's init itself; drop {', '.join(clash)}=")
        return _init_at_rate(model, plan, float(bpw), sensitivity)
    tables: set[int] = set()
    if isinstance(scheme, str) and scheme == "auto":
        scheme, tables = default_scheme(model), _embedding_tables(model)
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
            elif id(p) in tables:
                spec = EMBEDDING_SCHEME
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
) -> tuple[dict[str, torch.Tensor], Plan | None]:
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
        return sd, None
    if plan is None:
        raise PlanError(
            "no permcodec plan: initialize the model with permcodec.init(model, seed) (to "
            "load trained weights into a fresh model, init it with the same seed first, or "
            "save the state dict itself: it carries the plan), or pass plan="
        )
    if not isinstance(plan, Plan):
        plan = Plan.from_dict(dict(plan))
    return sd, plan


#: What ``approximate=`` (retired: it damaged models by default) is now.
RETIRED_APPROXIMATE = (
    "approximate= is retired (its default damaged models); store a model trained without "
    "LaPerm with bpw=R (a size) or max_error=E (a relative error per weight matrix)"
)


def save(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    plan: Plan | Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
    bits: int | None = None,
    bpw: float | None = None,
    calibration: Iterable[Any] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    max_error: float | None = None,
    lossless: bool = False,
    forward: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    approximate: bool | None = None,
) -> dict[str, float]:
    """Write a model (or state dict) to a `.perm` file, atomically; returns the relative
    L2 error of every tensor the file does not hold exactly (empty when lossless).

    **A model trained by permutation** (it has a plan, from :func:`init`): its seeded
    tensors must be exact arrangements of their initialization (else
    :class:`permcodec.NotAnArrangementError` names the tensor and row). They are stored
    losslessly unless ``bits`` (default: the plan's, set by ``LaPerm(..., bits=b)``)
    asks for rank buckets only, or ``bpw`` re-codes them at that many bits per weight
    (weight matrices, container included): each seeded matrix keeps the rank-bucket
    depth that loses least (:mod:`permcodec.format.recode`), the least relative error
    or, given ``calibration`` (batches of ``(inputs, targets)``; ``loss_fn`` defaults
    to cross-entropy), the least rise of the model's loss on them.

    **Any other model** (trained by Adam, by someone else; or a seeded model whose
    tensors left their init): every weight matrix goes on a grid of steps fitted to its
    values (``grid-rans``), the rest stays exact. ``bpw=R`` keeps the weight matrices
    within R bits per weight, ``max_error=E`` each matrix within relative L2 error E,
    ``lossless=True`` stores everything exactly; one of them must be given (so nothing
    is lost that was not asked for). With ``calibration`` (next), ``max_error=E`` bounds
    the relative L2 error of the model's outputs on the calibration data instead. ``calibration`` (a few batches of the
    model's inputs; a batch is passed as ``model(batch)``, ``model(*batch)`` for a tuple
    or ``model(**batch)`` for a dict, or as ``forward(model, batch)``) measures how much
    each row of each matrix moves the model's outputs, and the steps follow that; the
    second moments of the inputs each Linear, Conv1d, Conv2d or LSTM cell weight
    multiplies are measured too, and each rounding error is pushed onto the weights not
    yet rounded where those inputs hide it best (the error feedback of OBQ and GPTQ).
    """
    if approximate is not None:
        raise PlanError(RETIRED_APPROXIMATE)
    sd, plan = _state_and_plan(model_or_state_dict, plan, required=False)
    meta = {"permcodec_version": __version__, **dict(metadata or {})}
    aliases = tied_names(sd)
    if aliases:  # tied weights are stored once; the readers give every name back
        meta[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
        sd = {k: v for k, v in sd.items() if k not in aliases}
    items = [(name, *_numpy_of(name, t)) for name, t in sd.items()]
    trained = plan is None or (
        (bpw is not None or max_error is not None) and not _all_arrangements(items, plan)
    )
    if not trained:
        if max_error is not None or lossless:
            raise PlanError(
                "max_error= and lossless= are for models trained without LaPerm; this one "
                "has a plan: it is stored losslessly, or at bits= or bpw="
            )
        return _save_laperm(model_or_state_dict, path, items, plan, meta, bits, bpw,
                            calibration, loss_fn)  # fmt: skip
    if bits is not None:
        raise PlanError(
            "bits= stores the rank buckets of a model trained by LaPerm; this one has no "
            "plan: give bpw= (a size) or max_error= (a relative error)"
        )
    if bpw is None and max_error is None and not lossless:
        raise PlanError(
            "this model has no permcodec plan. A model trained without LaPerm is stored "
            "with a choice of what it may lose: bpw=R (a size), max_error=E (a relative "
            f"error per weight matrix; permcodec encode's default is "
            f"{posthoc.DEFAULT_MAX_ERROR:g}) or lossless=True. A model trained by LaPerm: "
            "init a fresh model with the same seed before loading its weights, or save "
            "its state dict, which carries the plan"
        )
    if calibration is None or lossless:
        return posthoc.write_trained(path, items, meta, bpw, max_error, lossless)
    if not isinstance(model_or_state_dict, nn.Module):
        raise PlanError("calibration= runs the model; pass the model, not its state dict")
    model, batches = unwrap(model_or_state_dict), list(calibration)
    names = posthoc.grid_candidates(items)
    importance = row_importance(model, batches, names, forward)
    hessians = input_hessians(model, batches, names, forward)
    if max_error is None:
        return posthoc.write_trained(path, items, meta, bpw, None, False, importance, hessians)
    mats = posthoc.matrices(items, names, importance, hessians)
    grids = grids_for_output_error(model, batches, mats, max_error, forward)
    return posthoc.write_grids(path, items, meta, grids)


def _numpy_of(name: str, t: Any) -> tuple[np.ndarray, str]:
    if not isinstance(t, torch.Tensor):
        raise PermcodecError(f"state dict entry {name!r} is a {type(t).__name__}, not a tensor")
    return to_numpy(t)


def _all_arrangements(items: list[tuple[str, np.ndarray, str]], plan: Plan) -> bool:
    """Whether every tensor of the plan is an arrangement of its seeded init."""
    by_name = {n: (a, dt) for n, a, dt in items}
    return all(
        n in by_name and is_arrangement(*by_name[n], tp.spec, tp.key)
        for n, tp in plan.tensors.items()
    )


def _save_laperm(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    items: list[tuple[str, np.ndarray, str]],
    plan: Plan,
    meta: dict[str, str],
    bits: int | None,
    bpw: float | None,
    calibration: Iterable[Any] | None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
) -> dict[str, float]:
    """:func:`save` of a model trained by permutation."""
    depths = None
    if bpw is not None:
        if bits is not None:
            raise PlanError("bpw= chooses the bucket depths itself; drop bits=")
        if calibration is None:
            depths = bucket_depths(plan_depths(items, plan, bpw))
        elif not isinstance(model_or_state_dict, nn.Module):
            raise PlanError("calibration= measures a model's loss; pass the model")
        else:  # measured on the values the file stores (LaPerm's synced ones)
            model = unwrap(model_or_state_dict)
            params = dict(model.named_parameters())
            stored = {n: to_torch(a, dt) for n, a, dt in items if n in plan.tensors}
            with holding(model, {n: v for n, v in stored.items() if n in params}):
                loss = loss_increase(model, calibration, loss_fn)
                depths = bucket_depths(plan_depths(items, plan, bpw, loss=loss))
    elif calibration is not None:
        raise PlanError("calibration= chooses the bucket depths of bpw=; give bpw=R too")
    header = write_file(path, items, plan, meta, bits=bits, tensor_bits=depths)
    return {e["name"]: float(e["rel_error"]) for e in header["tensors"] if "rel_error" in e}


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
    """``load_state_dict`` of the decoded tensors, a shape that differs or (``strict``)
    a tensor only one side holds named in one :class:`PermcodecError`; the plan recorded on the module (not on a TorchScript
    module, which takes no new attributes or hooks: it trains by no plan)."""
    base = unwrap(model)
    own = base.state_dict()
    for name, t in sd.items():
        if name in own and tuple(own[name].shape) != tuple(t.shape):
            raise PermcodecError(
                f"tensor {name!r} has shape {list(t.shape)} in the file and "
                f"{list(own[name].shape)} in the model"
            )
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if strict and (missing or unexpected):
        raise PermcodecError(
            "the file and the model hold different tensors: "
            + "; ".join(
                f"{len(names)} {where} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                for names, where in (
                    (missing, "in the model only"),
                    (unexpected, "in the file only"),
                )
                if names
            )
            + " (strict=False loads the tensors both have)"
        )
    result = base.load_state_dict(sd, strict=strict)
    if plan is not None and not isinstance(base, torch.jit.ScriptModule):
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


def load_checkpoint(
    path: str | os.PathLike[str], key: str | None = None
) -> tuple[dict[str, torch.Tensor], Plan | None]:
    """Read a ``.pt`` file with ``weights_only=True``: (state dict, plan or None).

    Accepts a permcodec checkpoint, ``{"state_dict": ...}``, a bare state dict (whose
    metadata carries the plan of a model seeded by :func:`init`), or a training
    checkpoint with the tensors under one key (``{"model_state": ..., "step": ...}``):
    ``key`` names it, or the one entry that holds tensors is taken. Files that need code
    to unpickle (a whole pickled model among them) and TorchScript archives are refused
    with :class:`UnsafeCheckpointError`.
    """
    where = os.fspath(path)
    if _is_torchscript(where):
        raise UnsafeCheckpointError(
            f"{where} is a TorchScript archive, which holds code; permcodec reads state "
            f"dicts: torch.save(torch.jit.load({where!r}).state_dict(), 'weights.pt') (for "
            "an archive you trust)"
        )
    try:
        obj = torch.load(where, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:  # torch.load raises many types on unsafe or malformed files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        whole = "torch.nn.modules" in str(e) or "Module" in first
        if not whole and not zipfile.is_zipfile(where) and not _is_legacy_torch(where):
            raise FormatError(
                f"{where} is not a torch checkpoint (.pt); permcodec encodes .pt, "
                ".safetensors and .npz files of tensors"
            ) from None
        hint = (
            "; it holds a whole pickled model: save model.state_dict() instead"
            if whole
            else "; a whole model saved with torch.save(model) needs "
            "torch.save(model.state_dict(), path) instead"
        )
        raise UnsafeCheckpointError(
            f"{where} cannot be loaded with weights_only=True (it needs unpickling "
            f"of code, or is not a torch file): {first}{hint}"
        ) from None
    if not isinstance(obj, Mapping):
        raise PermcodecError(f"{where} holds a {type(obj).__name__}, not a state dict")
    plan = Plan.from_dict(obj["permcodec"]) if "permcodec" in obj else None
    sd = tensors_in(obj, where, key)
    if plan is None:
        plan, prefix = plan_in_state_dict(sd)
        if prefix:
            return {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}, plan
    return dict(sd), plan


def tensors_in(obj: Mapping[str, Any], where: str, key: str | None = None) -> Mapping[str, Any]:
    """The state dict inside a loaded checkpoint: ``obj[key]``, ``obj["state_dict"]``,
    ``obj`` itself when it holds only tensors, or its one entry that holds only tensors."""

    def all_tensors(m: Any) -> bool:
        return isinstance(m, Mapping) and bool(m) and all(
            isinstance(v, torch.Tensor) for v in m.values())  # fmt: skip

    if key is not None:
        if not all_tensors(obj.get(key)):
            raise PermcodecError(
                f"{where} has no state dict of tensors under {key!r}; its keys: "
                f"{', '.join(map(repr, list(obj)[:8]))}"
            )
        return obj[key]
    if "state_dict" in obj and all_tensors(obj["state_dict"]):
        return obj["state_dict"]
    if all_tensors(obj):
        return obj
    nested = [k for k, v in obj.items() if all_tensors(v)]
    if len(nested) == 1:
        return obj[nested[0]]
    if nested:
        raise PermcodecError(
            f"{where} holds tensors under {', '.join(map(repr, nested))}; name one (key= or --key)"
        )
    raise PermcodecError(f"{where} does not hold a state dict of tensors")


def _is_torchscript(path: str) -> bool:
    """A zip archive with TorchScript code in it."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n or n.startswith("code/") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _is_legacy_torch(path: str) -> bool:
    """A checkpoint of torch's pre-1.6 format (a pickle stream)."""
    with open(path, "rb") as f:
        return f.read(2) in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
