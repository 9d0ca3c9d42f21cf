"""Approximate any trained model as arrangements of seeded values.

For a weight tensor that was never trained by LaPerm, fit a ``quantile`` spec whose
knots follow the tensor's own sorted values, generate its values from a seed, and give
each weight the generated value of the same rank. The result is an exact arrangement
of a seeded init, so it codes like any other. The rank buckets of
the whole tensor are stored (8 bits deep unless asked otherwise). Tensors where this
would not be smaller than storing them exactly stay raw. Every approximated tensor is reported with its relative L2 error.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .dtypes import FLOAT_DTYPES, TensorItem, as_float64, order_keys
from .initializers import InitSpec, initial_rows, row_shape
from .plan import Plan

#: Tensors smaller than this stay exact: knots and lanes would cost more than they save.
MIN_NUMEL = 256
#: Bucket depth of approximated tensors when none is asked for. Random values can
#: only follow a distribution, not exact ranks, so finer (lossless) ranks of a fitted
#: tensor cost more and do not bring its error down.
DEFAULT_BITS = 8


@dataclass
class Approximation:
    """What approximation did to one tensor (``rel_error`` is filled in once coded)."""

    name: str
    numel: int
    seeded: bool
    reason: str
    rel_error: float = 0.0


def knot_count(numel: int) -> int:
    """Knots of the fitted quantile function: more for larger tensors, 17..257."""
    return int(min(256, max(16, numel // 256))) + 1


def fit_knots(values: np.ndarray, n_knots: int) -> list[float]:
    """Equally spaced quantiles of ``values`` (min and max included), as floats."""
    q = np.linspace(0.0, 1.0, n_knots)
    return [float(x) for x in np.quantile(values.astype(np.float64).ravel(), q)]


def _arranged(array: np.ndarray, init: np.ndarray, dtype: str) -> np.ndarray:
    """``init`` rearranged so that each row follows the ranks of ``array``."""
    rows, m = init.shape
    target = np.argsort(order_keys(array.reshape(rows, m), dtype), axis=1, kind="stable")
    order = np.argsort(order_keys(init, dtype), axis=1, kind="stable")
    out = np.empty_like(init)
    np.put_along_axis(out, target, np.take_along_axis(init, order, axis=1), axis=1)
    return out


def _coded_bits_estimate(numel: int, bits: int, n_knots: int) -> float:
    """Rough size of the seeded form: b bits per weight plus the knots."""
    return numel * float(bits) + 72.0 * n_knots


def approximate_tensor(
    name: str, array: np.ndarray, dtype: str, plan: Plan, bits: int
) -> tuple[np.ndarray, Approximation]:
    """Seed ``array`` into ``plan`` (a rank-matched arrangement of one row holding the
    whole tensor, to be coded at ``bits``) when that pays; returns the array to store
    and what was done."""
    shape = tuple(int(d) for d in array.shape)
    numel = int(np.prod(shape)) if shape else 1
    if dtype not in FLOAT_DTYPES or len(shape) < 2:
        return array, Approximation(name, numel, False, "not a float weight matrix")
    if numel < MIN_NUMEL:
        return array, Approximation(name, numel, False, f"fewer than {MIN_NUMEL} values")
    values = as_float64(array, dtype)
    if not np.isfinite(values).all():
        return array, Approximation(name, numel, False, "holds inf or nan")
    granularity = "tensor"
    m = row_shape(shape, granularity)[1]
    n_knots = knot_count(numel)
    raw_bits = 8 * array.dtype.itemsize * numel
    if _coded_bits_estimate(numel, bits, n_knots) >= 0.9 * raw_bits:
        return array, Approximation(name, numel, False, "would not be smaller than exact")
    spec = InitSpec("quantile", knots=fit_knots(values, n_knots), granularity=granularity)
    tp = plan.add(name, spec, shape)
    rows = row_shape(shape, granularity)[0]
    init = initial_rows(tp.spec, tp.key, shape, dtype).reshape(rows, m)
    arranged = _arranged(array, init, dtype).reshape(shape)
    return arranged, Approximation(name, numel, True, f"quantile spec, {n_knots} knots")


def is_arrangement(array: np.ndarray, dtype: str, spec: dict, key: tuple[int, int]) -> bool:
    """Whether every row of ``array`` holds exactly the values of its seeded init."""
    if dtype not in FLOAT_DTYPES:
        return False
    shape = tuple(int(d) for d in array.shape)
    init = initial_rows(spec, key, shape, dtype)
    if init.size != array.size:
        return False
    trained = order_keys(np.ascontiguousarray(array).reshape(init.shape), dtype)
    return bool((np.sort(trained, axis=1) == np.sort(order_keys(init, dtype), axis=1)).all())


def approximate_items(
    items: Iterable[TensorItem], plan: Plan, bits: int | None
) -> tuple[list[TensorItem], Plan, dict[str, np.ndarray], dict[str, int], list[Approximation]]:
    """Approximate every tensor not already in ``plan``, and every tensor in it that is
    not an arrangement of its init (a model seeded by ``init`` but trained by plain
    Adam); returns the items to write, a copy of ``plan`` with those tensors, the
    originals of the approximated ones (to measure the error against), their bucket
    depths and the report."""
    plan = copy.deepcopy(plan)
    bits = DEFAULT_BITS if bits is None else bits
    depths: dict[str, int] = {}
    out: list[TensorItem] = []
    originals: dict[str, np.ndarray] = {}
    report: list[Approximation] = []
    for name, array, dtype in items:
        tp = plan.tensors.get(name)
        if tp is not None:
            if is_arrangement(array, dtype, tp.spec, tp.key):
                out.append((name, array, dtype))
                continue
            del plan.tensors[name]  # trained away from its init: approximate it too
        arranged, info = approximate_tensor(name, array, dtype, plan, bits)
        if info.seeded:
            originals[name] = array
            depths[name] = bits
        out.append((name, arranged, dtype))
        report.append(info)
    return out, plan, originals, depths, report


def fill_errors(report: list[Approximation], header: dict) -> None:
    """Copy each approximated tensor's measured ``rel_error`` from a written header."""
    errors = {e["name"]: e.get("rel_error", 0.0) for e in header["tensors"]}
    for r in report:
        if r.seeded:
            r.rel_error = float(errors.get(r.name, 0.0))
