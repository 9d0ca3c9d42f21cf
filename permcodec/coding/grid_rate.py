"""Rate control for trained models: the step of every row of every weight matrix.

A weight matrix of a model that was not trained by permutation goes on a grid
(``grid-rans``). What a row's rounding costs the model is taken to be its squared error
times an *importance* (its matrix's share over the matrix's energy, times the row's own
weight: 1, the square of the scale a following norm layer gives the row, or a measured
sensitivity). At high rates the split of bits that loses least gives every row the step
t / sqrt(importance): one slope t for the whole model, found by bisection so that the
file meets a rate (:func:`fit_to_rate`), or one t per matrix so that each stays within
a relative error (:func:`fit_to_error`). Costs are estimated on a sample of each matrix
while searching, then measured on the real coded tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..core.dtypes import as_float64
from . import grid_fit
from .grid_rans import Grid, grid_rows

#: Values of each matrix the rate search looks at (whole rows, spread over the matrix).
SAMPLE_VALUES = 1 << 16
#: Relative precision of the searched slope.
SEARCH_TOLERANCE = 1e-3
#: Full fits the rate search may make before it gives up meeting the target exactly.
MAX_FITS = 6


@dataclass
class Matrix:
    """A weight matrix to put on a grid: its values (storage, and float64 rows), the
    importance of each row (what a unit of squared error in the row costs the model),
    and, when calibration measured them, the second moments of its inputs (the rounding
    errors are then fed back, :func:`grid_fit.feedback_round`)."""

    name: str
    array: np.ndarray
    dtype: str
    importance: np.ndarray
    hessian: grid_fit.Hessian | None = None
    values: np.ndarray = field(init=False)
    factors: grid_fit.Hessian | None = field(init=False)
    _bounds: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False, repr=False)
    _sample: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rows, m = grid_rows(tuple(self.array.shape))
        self.values = as_float64(self.array, self.dtype).reshape(rows, m)
        self.importance = np.asarray(self.importance, dtype=np.float64).reshape(rows)
        self.factors = None if self.hessian is None else grid_fit.feedback_factors(self.hessian)
        peak = np.abs(self.values).max(axis=1) if self.values.size else np.zeros(rows)
        with np.errstate(divide="ignore"):
            inv = 1.0 / np.sqrt(self.importance)
        lo = np.where(peak > 0, peak * 2.0**-20, 1.0)
        hi = np.where(peak > 0, peak * 4.0, 1.0)
        self._bounds = (np.nan_to_num(inv, nan=np.inf, posinf=np.inf), lo, hi)
        take = max(1, min(rows, SAMPLE_VALUES // max(m, 1)))
        sample = np.unique(np.linspace(0, max(rows - 1, 0), take).round().astype(np.int64))
        self._sample = (sample, self.values[sample])

    @property
    def numel(self) -> int:
        return int(self.array.size)

    def steps(self, slope: float) -> np.ndarray:
        """The step of every row at ``slope``: slope / sqrt(importance), kept where the
        grid holds the row (at least a 2**-20 part of its largest value, at most four
        times it, so an unimportant row rounds to zeros)."""
        inv, lo, hi = self._bounds
        with np.errstate(invalid="ignore"):
            step = slope * inv
        return np.clip(np.nan_to_num(step, nan=1.0, posinf=np.inf), lo, hi)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, their values): rows spread evenly over the matrix, about
        :data:`SAMPLE_VALUES` values."""
        return self._sample


def estimate_bits(mat: Matrix, slope: float) -> float:
    """Entropy of the grid symbols of a sample of rows, scaled to the matrix, plus a
    few bits per row for its step and table."""
    rows, vals = mat.sample()
    inv, lo, hi = mat._bounds
    with np.errstate(invalid="ignore"):
        desired = np.clip(np.nan_to_num(slope * inv[rows], nan=1.0), lo[rows], hi[rows])
    steps, step_of = grid_fit.snap_steps(desired)
    q = grid_fit.grid_indices(vals, steps.astype(np.float64)[step_of])
    counts = np.bincount((q - q.min(initial=0)).reshape(-1))
    counts = counts[counts > 0]
    p = counts / counts.sum()
    per_value = float(-(p * np.log2(p)).sum())
    return per_value * mat.numel + 4.0 * mat.values.shape[0] + 64.0 * len(counts)


def fit_to_rate(
    matrices: list[Matrix],
    budget_bits: float,
    measure: Callable[[str, Grid], float],
) -> dict[str, Grid]:
    """Grids of ``matrices`` whose coded sizes, as ``measure`` (name, grid -> bits) gives
    them, add up to at most ``budget_bits`` and close below it. The slope is solved on
    the estimates (:func:`estimate_bits`), each matrix's scaled by what its last fit
    measured against its estimate, and kept inside the bracket of measured fits under and
    over the budget (at most :data:`MAX_FITS` fits). Raises ValueError when no grid fits."""
    if not matrices:
        return {}
    target = budget_bits * (1.0 - FILL / 2)
    under: dict[str, Grid] | None = None
    lo, hi = SLOPE_RANGE  # log2 of the slope; hi is known to fit (or is the coarsest)
    scale = {m.name: 1.0 for m in matrices}

    def estimate(slope: float) -> float:
        return sum(scale[m.name] * estimate_bits(m, 2.0**slope) for m in matrices)

    for _ in range(MAX_FITS):
        slope = _solve(estimate, target, lo, hi)
        grids = {m.name: fit(m, 2.0**slope) for m in matrices}
        bits = {n: measure(n, g) for n, g in grids.items()}
        spent = sum(bits.values())
        if spent <= budget_bits:
            under, hi = grids, slope
            if spent >= (1.0 - FILL) * budget_bits:
                break
        else:
            lo = slope
        if hi - lo < SEARCH_TOLERANCE:
            break
        for m in matrices:
            scale[m.name] = bits[m.name] / max(estimate_bits(m, 2.0**slope), 1.0)
    if under is None:  # the estimates misled (error feedback at very low rates): bisect
        under = _bisect_measured(matrices, budget_bits, measure, lo)
    return under


def _bisect_measured(
    matrices: list[Matrix],
    budget_bits: float,
    measure: Callable[[str, Grid], float],
    lo: float,
) -> dict[str, Grid]:
    """Bisection on measured fits between ``lo`` (a log2 slope known to be over the
    budget) and the coarsest grids; ValueError when even those do not fit."""
    hi = SLOPE_RANGE[1]
    best = {m.name: fit(m, 2.0**hi) for m in matrices}
    if sum(measure(n, g) for n, g in best.items()) > budget_bits:
        raise ValueError("no grid fits the budget")
    for _ in range(2 * MAX_FITS):
        mid = (lo + hi) / 2
        grids = {m.name: fit(m, 2.0**mid) for m in matrices}
        spent = sum(measure(n, g) for n, g in grids.items())
        if spent <= budget_bits:
            best, hi = grids, mid
            if spent >= (1.0 - FILL) * budget_bits:
                break
        else:
            lo = mid
    return best


#: The range of log2(slope) the rate search looks in.
SLOPE_RANGE = (-60.0, 40.0)
#: How close below the budget the rate search tries to land (a fraction of it).
FILL = 0.02


def _solve(estimate: Callable[[float], float], bits: float, lo: float, hi: float) -> float:
    """The log2(slope) in [lo, hi] at which ``estimate`` is ``bits`` (bisection; inside
    the bracket, so each fit narrows it)."""
    margin = min((hi - lo) * 0.02, SEARCH_TOLERANCE)
    a, b = lo + margin, hi - margin
    while b - a > SEARCH_TOLERANCE:
        mid = (a + b) / 2
        if estimate(mid) > bits:
            a = mid
        else:
            b = mid
    return b


def fit(mat: Matrix, slope: float) -> Grid:
    """The grid of one matrix at ``slope``."""
    return grid_fit.fit_grid(
        mat.array, mat.dtype, mat.steps(slope), factors=mat.factors, values=mat.values
    )


def relative_error(mat: Matrix, grid: Grid) -> float:
    """||decoded - original|| / ||original|| of a matrix on its grid."""
    decoded = as_float64(grid.decoded, mat.dtype).reshape(mat.values.shape)
    norm = float(np.linalg.norm(mat.values))
    diff = float(np.linalg.norm(decoded - mat.values))
    return diff / norm if norm else (0.0 if diff == 0 else math.inf)


def fit_to_error(mat: Matrix, max_error: float) -> Grid:
    """The coarsest grid (largest slope, to within 2**0.02) whose relative L2 error is at
    most ``max_error``: searched on the rounding alone, then checked on the coded grid
    (whose outliers are exact and whose values pass through the dtype)."""
    lo, hi = -60.0, 20.0  # log2 of the slope: lo meets the bound, hi need not
    if _quick_error(mat, 2.0**hi) <= max_error:
        lo = hi
    while hi - lo > 0.02:
        mid = (lo + hi) / 2
        if _quick_error(mat, 2.0**mid) <= max_error:
            lo = mid
        else:
            hi = mid
    best = fit(mat, 2.0**lo)
    while relative_error(mat, best) > max_error and lo > -60.0:  # rounding through the dtype
        lo -= 0.02
        best = fit(mat, 2.0**lo)
    return best


def _quick_error(mat: Matrix, slope: float) -> float:
    """Relative error of a matrix on the grid of ``slope`` (float32 rounding aside)."""
    steps, step_of = grid_fit.snap_steps(mat.steps(slope))
    row_steps = steps.astype(np.float64)[step_of]
    q = grid_fit.grid_indices(mat.values, row_steps)
    norm = float(np.linalg.norm(mat.values))
    diff = float(np.linalg.norm(q * row_steps[:, None] - mat.values))
    return diff / norm if norm else 0.0
