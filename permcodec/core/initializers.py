"""Initializer specs: serializable recipes that turn a Philox stream into initial values.

A spec is a plain dict (``kind``, its parameters, ``density``, ``granularity``,
``version``) after :func:`resolve` has filled in the fans of a concrete shape. The same
dict, stream key and shape always give the same float32 values, on numpy or torch.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PlanError
from . import detmath, philox
from .checks import is_int
from .dtypes import from_float32
from .ops import NUMPY, NumpyOps

SPEC_VERSION = 1
GRANULARITIES = ("row", "tensor")
_TWO_POW_M32 = 2.0**-32

#: kind -> (required params, defaults)
KINDS: dict[str, dict[str, Any]] = {
    "uniform": {"a": None, "b": None},
    "normal": {"mean": 0.0, "std": 1.0},
    "trunc_normal": {"mean": 0.0, "std": 1.0, "a": -2.0, "b": 2.0},
    "kaiming_uniform": {"gain": math.sqrt(2.0), "mode": "fan_in"},
    "kaiming_normal": {"gain": math.sqrt(2.0), "mode": "fan_in"},
    "xavier_uniform": {"gain": 1.0},
    "xavier_normal": {"gain": 1.0},
    "constant": {"value": None, "random_sign": False},
    "two_value": {"low": -1.0, "high": 1.0, "p": 0.5},
    "quantile": {"knots": None},
    "levels": {"levels": 1.0, "scale": None},
}
#: Most knots a quantile spec may have.
MAX_KNOTS = 4097
#: Most magnitude levels (per sign) a levels spec may have.
MAX_LEVELS = 128
#: Kinds whose values do not come from the value stream but from ranks of the mask
#: stream, with exact counts per row.
RANKED_KINDS = ("levels",)
#: The first format version that holds each kind added after version 1.
KIND_SINCE = {"quantile": 2, "levels": 5}

#: Friendly names for common schemes: name -> (kind, params).
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "he_uniform": ("kaiming_uniform", {}),
    "he_normal": ("kaiming_normal", {}),
    "glorot_uniform": ("xavier_uniform", {}),
    "glorot_normal": ("xavier_normal", {}),
    "torch_default": ("kaiming_uniform", {"gain": math.sqrt(1.0 / 3.0)}),
    "binary": ("two_value", {"low": -1.0, "high": 1.0}),
    "weight_agnostic": ("constant", {}),
}


@dataclass(frozen=True)
class InitSpec:
    """A user-facing initializer recipe, before it is fitted to a shape.

    ``InitSpec("he_uniform")``, ``InitSpec("normal", std=0.02)``,
    ``InitSpec("constant", value=0.08, density=0.6)``.
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    density: float = 1.0
    granularity: str = "row"

    def __init__(
        self, kind: str, *, density: float = 1.0, granularity: str = "row", **params: Any
    ) -> None:
        if kind in ALIASES:
            base, extra = ALIASES[kind]
            kind, params = base, {**extra, **params}
        if kind not in KINDS:
            raise PlanError(
                f"unknown initializer {kind!r}; known: {', '.join(sorted([*KINDS, *ALIASES]))}"
            )
        unknown = set(params) - set(KINDS[kind])
        if unknown:
            valid = ", ".join(KINDS[kind]) or "none"
            raise PlanError(
                f"initializer {kind!r} takes no parameter(s) {sorted(unknown)}; its "
                f"parameters: {valid}"
            )
        merged = {**KINDS[kind], **params}
        missing = [k for k, v in merged.items() if v is None]
        if missing:
            raise PlanError(f"initializer {kind!r} needs parameter(s) {missing}")
        if not 0.0 <= float(density) <= 1.0:
            raise PlanError(f"density must be in [0, 1], got {density}")
        if granularity not in GRANULARITIES:
            raise PlanError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "params", merged)
        object.__setattr__(self, "density", float(density))
        object.__setattr__(self, "granularity", granularity)


def parse_spec(text: str) -> InitSpec:
    """Parse ``"kind"`` or ``"kind:key=value,key=value"`` (the CLI's ``--init``).

    ``"he_uniform"``, ``"normal:std=0.02"``, ``"constant:value=0.08,random_sign=true"``.
    """
    kind, _, rest = text.strip().partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise PlanError(f"cannot parse {item!r} in initializer {text!r}: expected key=value")
        low = value.strip().lower()
        if low in ("true", "false"):
            params[key.strip()] = low == "true"
        else:
            try:
                params[key.strip()] = float(value)
            except ValueError:
                params[key.strip()] = value.strip()
    return InitSpec(kind.strip(), **params)


def as_spec(spec: str | InitSpec | dict[str, Any]) -> InitSpec:
    """Accept a scheme name, an :class:`InitSpec` or a (possibly resolved) spec dict."""
    if isinstance(spec, InitSpec):
        return spec
    if isinstance(spec, str):
        return parse_spec(spec) if ":" in spec else InitSpec(spec)
    if isinstance(spec, dict):
        d = {k: v for k, v in spec.items() if k not in ("fan_in", "fan_out", "version")}
        return InitSpec(d.pop("kind"), **d)
    raise PlanError(f"cannot make an initializer spec from {type(spec).__name__}")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) the way torch.nn.init computes them."""
    if len(shape) < 2:
        n = int(math.prod(shape)) if shape else 1
        return n, n
    receptive = int(math.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def resolve(spec: str | InitSpec | dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    """The concrete, serializable spec of ``spec`` for a tensor of ``shape``."""
    s = as_spec(spec)
    fan_in, fan_out = fans(tuple(shape))
    out: dict[str, Any] = {"kind": s.kind, "version": SPEC_VERSION}
    for k, v in s.params.items():
        if isinstance(v, (list, tuple, np.ndarray)):
            out[k] = [float(x) for x in v]
        else:
            out[k] = v if isinstance(v, (bool, str)) else float(v)
    out.update(density=s.density, granularity=s.granularity, fan_in=fan_in, fan_out=fan_out)
    check_resolved(out, tuple(shape))
    return out


_FLOAT_PARAMS = ("a", "b", "mean", "std", "gain", "value", "low", "high", "p", "levels", "scale")


def check_resolved(spec: Any, shape: tuple[int, ...] | None = None) -> None:
    """Raise :class:`PlanError` unless ``spec`` is a complete, sane resolved spec
    (for ``shape``, when given). Readers call this before trusting a stored spec."""
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("kind"), str)
        or spec["kind"] not in KINDS
    ):
        raise PlanError(f"initializer spec has an unknown kind: {spec!r:.80}")
    kind = spec["kind"]
    expected = {"kind", "version", "density", "granularity", "fan_in", "fan_out", *KINDS[kind]}
    if set(spec) != expected:
        raise PlanError(f"{kind} spec must have exactly the fields {sorted(expected)}")
    if not is_int(spec["version"]) or not 1 <= spec["version"] <= SPEC_VERSION:
        raise PlanError(f"{kind} spec version {spec['version']!r} is not supported")
    for k in _FLOAT_PARAMS:
        if k in spec:
            v = spec[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise PlanError(f"{kind} spec parameter {k}={v!r} must be a finite number")
    d = spec["density"]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d <= 1.0:
        raise PlanError(f"{kind} spec density {d!r} must be in [0, 1]")
    if spec["granularity"] not in GRANULARITIES:
        raise PlanError(f"{kind} spec granularity must be one of {GRANULARITIES}")
    fi, fo = spec["fan_in"], spec["fan_out"]
    if not (is_int(fi) and is_int(fo) and fi >= 0 and fo >= 0):
        raise PlanError(f"{kind} spec fans must be non-negative integers")
    if shape is not None and (fi, fo) != fans(shape):
        raise PlanError(f"{kind} spec fans ({fi}, {fo}) do not match shape {list(shape)}")
    if kind in ("normal", "trunc_normal") and not spec["std"] > 0:
        raise PlanError(f"{kind} spec needs std > 0")
    if kind == "trunc_normal" and not spec["a"] < spec["b"]:
        raise PlanError("trunc_normal spec needs a < b")
    if kind == "uniform" and not spec["a"] <= spec["b"]:
        raise PlanError("uniform spec needs a <= b")
    if kind == "two_value" and not 0.0 <= spec["p"] <= 1.0:
        raise PlanError("two_value spec needs 0 <= p <= 1")
    if kind in ("kaiming_uniform", "kaiming_normal"):
        if spec["mode"] not in ("fan_in", "fan_out"):
            raise PlanError(f"mode must be 'fan_in' or 'fan_out', got {spec['mode']!r}")
        if spec[spec["mode"]] <= 0 and math.prod(shape or (1,)) > 0:
            raise PlanError(f"{kind} needs a positive {spec['mode']}")
    if (
        kind in ("xavier_uniform", "xavier_normal")
        and fi + fo <= 0
        and math.prod(shape or (1,)) > 0
    ):
        raise PlanError(f"{kind} needs fan_in + fan_out > 0")
    if kind == "constant" and not isinstance(spec["random_sign"], bool):
        raise PlanError("constant spec random_sign must be true or false")
    if kind == "quantile":
        _check_knots(spec["knots"])
    if kind == "levels":
        n = spec["levels"]
        if not (n == int(n) and 1 <= n <= MAX_LEVELS):
            raise PlanError(f"levels spec needs a whole number of levels in 1..{MAX_LEVELS}")
        if not spec["scale"] > 0:
            raise PlanError("levels spec needs scale > 0")


@functools.lru_cache(maxsize=256)
def level_values(levels: int, scale: float) -> tuple[float, ...]:
    """The values of a levels spec by class (binary64): the 2 * levels nonzero values,
    most negative first, then zero. Magnitude j is ``scale`` times the normal quantile
    at 1/2 + (j + 1/2) / (2 levels), j = 0 .. levels - 1 (FORMAT 6.6)."""
    u = np.array([0.5 + 0.5 * ((j + 0.5) / levels) for j in range(levels)], dtype=np.float64)
    mags = [float(x) * scale for x in detmath.ndtri(u)]
    return (*(-x for x in reversed(mags)), *mags, 0.0)


def level_starts(levels: int, kept: int) -> list[int]:
    """First mask rank of each class of a levels row after the first: the kept ranks
    [0, kept) split into 2 * levels groups, group g starting at (g * kept) // (2 *
    levels); the zeros start at ``kept`` (FORMAT 6.7)."""
    groups = 2 * levels
    return [(g * kept) // groups for g in range(1, groups)] + [kept]


def level_counts(levels: int, density: float, m: int) -> list[int]:
    """How many values of each class (:func:`level_values`) a row of ``m`` holds."""
    kept = kept_count(density, m)
    starts = [0, *level_starts(levels, kept), m]
    return [b - a for a, b in itertools.pairwise(starts)]


def _check_knots(knots: Any) -> None:
    if not isinstance(knots, list) or not 2 <= len(knots) <= MAX_KNOTS:
        raise PlanError(f"quantile spec needs a list of 2..{MAX_KNOTS} knots")
    for x in knots:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise PlanError(f"quantile spec knot {x!r} must be a finite number")
    if any(b < a for a, b in itertools.pairwise(knots)):
        raise PlanError("quantile spec knots must be non-decreasing")


def row_shape(shape: tuple[int, ...], granularity: str) -> tuple[int, int]:
    """(rows, row length) of a tensor: ``weight.flatten(1)`` rows, or one row."""
    n = int(math.prod(shape)) if shape else 1
    if granularity == "tensor" or len(shape) < 2:
        return 1, n
    return shape[0], n // shape[0] if shape[0] else 0


def _uniform01(key: tuple[int, int], purpose: int, start: int, stop: int, xp: NumpyOps) -> Any:
    """Uniforms in the open interval (0, 1): (word + 1/2) * 2**-32, exact in float64."""
    return (xp.float64(philox.words(key, purpose, start, stop, xp)) + 0.5) * _TWO_POW_M32


def _base_values(
    spec: dict[str, Any], key: tuple[int, int], start: int, stop: int, xp: NumpyOps
) -> Any:
    """float64 values of elements [start, stop) (before the density mask), in C order."""
    kind = spec["kind"]
    if kind in ("uniform", "kaiming_uniform", "xavier_uniform"):
        if kind == "uniform":
            a, b = spec["a"], spec["b"]
        else:
            if kind == "kaiming_uniform":
                bound = spec["gain"] * math.sqrt(3.0 / _fan(spec))
            else:
                bound = spec["gain"] * math.sqrt(6.0 / (spec["fan_in"] + spec["fan_out"]))
            a, b = -bound, bound
        return philox.uniform(key, philox.VALUES, start, stop, a, b, xp)
    if kind in ("normal", "kaiming_normal", "xavier_normal"):
        if kind == "normal":
            mean, std = spec["mean"], spec["std"]
        elif kind == "kaiming_normal":
            mean, std = 0.0, spec["gain"] / math.sqrt(_fan(spec))
        else:
            mean, std = 0.0, spec["gain"] * math.sqrt(2.0 / (spec["fan_in"] + spec["fan_out"]))
        return mean + std * detmath.ndtri(_uniform01(key, philox.VALUES, start, stop, xp), xp)
    if kind == "trunc_normal":
        mean, std = spec["mean"], spec["std"]
        lo = detmath.ndtr_scalar((spec["a"] - mean) / std)
        hi = detmath.ndtr_scalar((spec["b"] - mean) / std)
        p = lo + (hi - lo) * _uniform01(key, philox.VALUES, start, stop, xp)
        z = mean + std * detmath.ndtri(p, xp)
        return xp.where(z < spec["a"], spec["a"], xp.where(z > spec["b"], spec["b"], z))
    if kind == "constant":
        ones = xp.float64(philox.words(key, philox.VALUES, start, stop, xp) * 0) + spec["value"]
        if not spec["random_sign"]:
            return ones
        sign = philox.words(key, philox.SIGN, start, stop, xp) >> 31
        return xp.where(sign == 1, -ones, ones)
    if kind == "quantile":
        # piecewise-linear quantile function through equally spaced knots
        knots = [0.0 + float(x) for x in spec["knots"]]
        q = len(knots) - 1
        table = xp.float64(knots)
        t = _uniform01(key, philox.VALUES, start, stop, xp) * float(q)
        i = xp.int64(t)  # t > 0, so truncation is floor
        i = xp.where(i > q - 1, q - 1, i)
        lo, hi = table[i], table[i + 1]
        return lo + (hi - lo) * (t - xp.float64(i))
    if kind == "two_value":
        threshold = int(spec["p"] * 2.0**32)
        w = philox.words(key, philox.VALUES, start, stop, xp)
        zeros = xp.float64(w * 0)
        return xp.where(w < threshold, zeros + spec["high"], zeros + spec["low"])
    raise PlanError(f"unknown initializer kind {kind!r}")


def _fan(spec: dict[str, Any]) -> int:
    mode = spec["mode"]
    if mode not in ("fan_in", "fan_out"):
        raise PlanError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = spec[mode]
    if fan <= 0:
        raise PlanError("fan of a zero-sized tensor is 0; cannot scale its initializer")
    return fan


def kept_count(density: float, m: int) -> int:
    """Exact number of non-zeros in a row of ``m`` values at ``density`` (round half up)."""
    return min(m, max(0, math.floor(density * m + 0.5)))


def generate(
    spec: dict[str, Any],
    key: tuple[int, int],
    shape: tuple[int, ...],
    xp: NumpyOps = NUMPY,
    rows: tuple[int, int] | None = None,
) -> Any:
    """The float32 initial values of a tensor, shaped ``(rows, row_length)``; with
    ``rows=(r0, r1)`` only those rows (the same values: decoders stream by rows).

    Element ``i`` (C order) draws word ``i`` of the stream. With density < 1, each row
    (or the tensor) keeps exactly :func:`kept_count` values: those whose mask words are
    smallest, ties to the lower index; the rest are +0.0.
    """
    n_rows, m = row_shape(tuple(shape), spec["granularity"])
    r0, r1 = (0, n_rows) if rows is None else rows
    if not 0 <= r0 <= r1 <= n_rows:
        raise ValueError(f"rows {rows} outside 0..{n_rows}")
    count = r1 - r0
    if count * m == 0:
        return xp.float32(xp.full((count, m), 0.0))
    if spec["kind"] in RANKED_KINDS:
        return xp.float32(_levels_rows(spec, key, r0, r1, m, xp))
    values = _base_values(spec, key, r0 * m, r1 * m, xp).reshape(count, m)
    if spec["density"] < 1.0:
        k = kept_count(spec["density"], m)
        ranks = _mask_ranks(key, r0, r1, m, xp)
        values = xp.where(ranks < k, values, xp.abs(values) * 0.0)  # +0.0, never -0.0
    return xp.float32(values)


def _levels_rows(
    spec: dict[str, Any], key: tuple[int, int], r0: int, r1: int, m: int, xp: NumpyOps
) -> Any:
    """binary64 values of rows r0..r1-1 of a levels spec: each position's class from its
    mask rank (:func:`level_starts`), each class's value from :func:`level_values`;
    placed by scattering the values of ranks 0..m-1 to the positions holding them."""
    order = _mask_order(key, r0, r1, m, xp)
    kept = kept_count(spec["density"], m)
    by_rank = xp.float64(_values_by_rank(int(spec["levels"]), kept, float(spec["scale"]), m))
    by_rank = by_rank.reshape(1, m)
    return xp.put_along(xp.zeros((r1 - r0, m), by_rank), order, by_rank, axis=1)


@functools.lru_cache(maxsize=64)
def _values_by_rank(levels: int, kept: int, scale: float, m: int) -> tuple[float, ...]:
    """The value of mask rank j = 0..m-1 of a levels row."""
    cls = np.searchsorted(np.asarray(level_starts(levels, kept)), np.arange(m), side="right")
    return tuple(np.asarray(level_values(levels, scale), dtype=np.float64)[cls].tolist())


def _mask_order(key: tuple[int, int], r0: int, r1: int, m: int, xp: NumpyOps) -> Any:
    """Positions of rows r0..r1-1 sorted by their mask words (ties: the lower index
    first), as int64 (FORMAT 6.7): position ``order[r, j]`` has mask rank j."""
    mask_words = philox.words(key, philox.MASK, r0 * m, r1 * m, xp).reshape(r1 - r0, m)
    return xp.argsort_stable(mask_words, axis=1)


def _mask_ranks(key: tuple[int, int], r0: int, r1: int, m: int, xp: NumpyOps) -> Any:
    """Rank of each position of rows r0..r1-1 among its row's mask words, as int64."""
    order = _mask_order(key, r0, r1, m, xp)
    return xp.put_along(xp.zeros_like(order), order, xp.arange(0, m).reshape(1, m), axis=1)


def initial_rows(
    spec: dict[str, Any],
    key: tuple[int, int],
    shape: tuple[int, ...],
    dtype: str,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """The seeded initial values of a tensor as (rows, m), in the storage dtype of
    ``dtype`` (only rows r0..r1-1 with ``rows=(r0, r1)``)."""
    return from_float32(generate(spec, key, shape, rows=rows), dtype)
