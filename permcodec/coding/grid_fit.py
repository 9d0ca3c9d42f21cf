"""Putting a trained tensor on a grid: the encoder side of ``grid-rans``.

Given the step each row should have (the allocator's choice,
:mod:`permcodec.coding.grid_rate`), :func:`fit_grid` snaps the steps to a few distinct
values, rounds every value to its row's grid (feeding each rounding error back onto the
values not yet rounded, when the second moments of the matrix's inputs are known),
escapes the few values too far out for the alphabet (kept exactly), and groups the rows
into the static tables that code their symbols in the fewest bits.
"""

from __future__ import annotations

import math

import numpy as np
import zstandard

from .. import kernels
from ..core.dtypes import as_float64, from_float32
from . import static_rans
from .grid_rans import MAX_INDEX, Grid, grid_rows, grid_values
from .raw import ZSTD_LEVEL

#: Steps are snapped to powers of 2**(1/STEPS_PER_OCTAVE): rows whose ideal steps differ
#: by less share a step (an allocation off by under 4.5% in step costs nothing measurable).
STEPS_PER_OCTAVE = 8
#: Grid symbols of a tensor at most (the escape comes on top): indices beyond the most
#: populated window of this width are outliers.
MAX_GRID_SYMBOLS = 2048
#: Row groups of tables a tensor may use, tried in these numbers (cheapest total wins).
TABLE_CHOICES = (1, 2, 4, 8, 16)
#: Tables per row group (contexts set by the previous symbol's sign and size), tried
#: likewise; each is a merge of the largest (see :func:`_merge_contexts`).
CONTEXT_CHOICES = (1, 3, 5, 9)


def snap_steps(desired: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct steps as float32, index of each row's step): each positive ``desired``
    step snapped to the nearest power of 2**(1/STEPS_PER_OCTAVE) (in log scale)."""
    k = np.rint(STEPS_PER_OCTAVE * np.log2(np.asarray(desired, dtype=np.float64)))
    k = np.clip(k, -126 * STEPS_PER_OCTAVE, 126 * STEPS_PER_OCTAVE).astype(np.int64)
    levels, step_of = np.unique(k, return_inverse=True)
    steps = np.exp2(levels / STEPS_PER_OCTAVE).astype(np.float32)
    return steps, step_of.astype(np.int64)


def grid_indices(values: np.ndarray, row_steps: np.ndarray) -> np.ndarray:
    """Each value rounded to the nearest multiple of its row's step (ties to even),
    clipped to the format's index range."""
    k = kernels.load("grid_c")
    if k is not None and values.ndim == 2:
        return k.round_to_grid(values, row_steps, MAX_INDEX - 1)
    q = np.rint(values / row_steps[:, None])
    return np.clip(q, -(MAX_INDEX - 1), MAX_INDEX - 1).astype(np.int64)


def alphabet(q: np.ndarray, width: int = MAX_GRID_SYMBOLS) -> tuple[int, int]:
    """(q_lo, symbols): the shortest run of consecutive indices that holds every value of
    the window of ``width`` indices holding the most values (all of them when they span
    no more)."""
    lo, hi = int(q.min(initial=0)), int(q.max(initial=0))
    if hi - lo + 1 <= width:
        return lo, hi - lo + 1
    counts = np.bincount(q.ravel() - lo)
    inside = np.convolve(counts, np.ones(width, dtype=np.int64), mode="valid")
    start = int(np.argmax(inside))
    used = np.nonzero(counts[start : start + width])[0]
    return lo + start + int(used[0]), int(used[-1] - used[0]) + 1


def fit_grid(
    array: np.ndarray,
    dtype: str,
    desired_steps: np.ndarray,
    max_tables: int = 16,
    factors: Hessian | None = None,
    values: np.ndarray | None = None,
) -> Grid:
    """``array`` (storage values of a float dtype) on the grid of ``desired_steps`` (one
    per row, :func:`grid_rows`), with its tables chosen (:func:`choose_tables`). Without
    ``factors`` every value is rounded to its nearest grid point; with those of the
    second moments of the inputs the matrix multiplies (:func:`feedback_factors`), each
    rounding error is pushed onto the values not yet rounded (:func:`feedback_round`).
    Escaped values keep their input (storage) value, or, with error feedback, their grid
    value. ``values``: the array as float64 rows, when the caller has them already."""
    rows, m = grid_rows(tuple(array.shape))
    if values is None:
        values = as_float64(array, dtype).reshape(rows, m)
    steps, step_of = snap_steps(desired_steps)
    return _on_steps(array, dtype, steps, step_of, values, max_tables, factors)


def exact_grid(array: np.ndarray, dtype: str, row_steps: np.ndarray, max_tables: int = 16) -> Grid:
    """``array`` on the grid of ``row_steps`` (float32, one per row) exactly as given, not
    snapped: a matrix whose values are already multiples of their row's step, such as
    a model trained quantization-aware. Lossless: raises ValueError if a value is not
    ``q * step`` in float32 for an integer ``q`` within the format's range."""
    rows, m = grid_rows(tuple(array.shape))
    values = as_float64(array, dtype).reshape(rows, m)
    steps, step_of = np.unique(np.asarray(row_steps, dtype=np.float32), return_inverse=True)
    if not (np.isfinite(steps).all() and (steps > 0).all()):
        raise ValueError("grid steps must be finite and positive")
    grid = _on_steps(array, dtype, steps, step_of.astype(np.int64), values, max_tables, None)
    if grid.outliers.size or grid.decoded.tobytes() != np.ascontiguousarray(array).tobytes():
        raise ValueError("the values are not on the grid of the given steps")
    return grid


def _on_steps(
    array: np.ndarray,
    dtype: str,
    steps: np.ndarray,
    step_of: np.ndarray,
    values: np.ndarray,
    max_tables: int,
    factors: Hessian | None,
) -> Grid:
    """:func:`fit_grid` once the steps are chosen."""
    rows, m = values.shape
    row_steps = steps.astype(np.float64)[step_of]
    if factors is None:
        q = grid_indices(values, row_steps)
    else:
        q = feedback_round(values, row_steps, factors)
    q_lo, a = alphabet(q)
    symbols, escaped = _symbols(q, q_lo, a)
    tables = choose_tables(symbols, q_lo, a + 1, max_tables)
    if escaped is None:
        outliers = np.empty(0, dtype=np.asarray(array).dtype)
    elif factors is None:
        outliers = np.ascontiguousarray(array).reshape(rows, m)[escaped]
    else:  # the grid value, as an outlier
        on_grid = (q * row_steps[:, None]).astype(np.float32)
        outliers = from_float32(on_grid[escaped], dtype)
    decoded = grid_values(symbols, row_steps, q_lo, a, dtype)
    if escaped is not None:
        decoded[escaped] = outliers
    return Grid(symbols, step_of, steps, tables, q_lo, outliers, decoded.reshape(array.shape))


#: Second moments of a matrix's inputs, as diagonal blocks: (first column, block).
Hessian = list[tuple[int, np.ndarray]]
#: Dampening of a Hessian block: this share of its mean diagonal is added to the diagonal.
DAMPING = 0.01
#: Columns rounded between two updates of the columns after them (GPTQ's lazy batches).
FEEDBACK_BATCH = 128


def feedback_factors(hessian: Hessian) -> Hessian:
    """The upper Cholesky factor of the inverse of each (damped) block of ``hessian``:
    what :func:`feedback_round` needs, the same at every step size (so computed once).
    Inputs that never moved (a zero on the diagonal) count as unit inputs; a block that
    is not positive definite even damped is left out (its columns rounded to nearest)."""
    out = []
    for start, block in hessian:
        h = np.array(block, dtype=np.float64)
        n = h.shape[0]
        diag = np.diag(h).copy()
        dead = diag <= 0
        h[dead, dead] = 1.0
        h[np.diag_indices(n)] += DAMPING * float(diag[~dead].mean() if (~dead).any() else 1.0)
        try:
            out.append((start, np.linalg.cholesky(np.linalg.inv(h)).T))
        except np.linalg.LinAlgError:
            continue
    return out


def feedback_round(values: np.ndarray, row_steps: np.ndarray, factors: Hessian) -> np.ndarray:
    """Grid indices (R, m) of ``values`` rounded one column at a time, each column's
    rounding error pushed onto the columns after it in its block, through the factors
    of the inverse of the inputs' second moments (:func:`feedback_factors`; the optimal
    brain surgeon update of OBQ and GPTQ), so that the matrix's outputs on those inputs
    move as little as they can. Columns outside every block are rounded to nearest."""
    w = values.copy()
    q = grid_indices(values, row_steps)
    for start, u in factors:
        n = u.shape[0]
        wb = w[:, start : start + n]
        for j0 in range(0, n, FEEDBACK_BATCH):
            j1 = min(j0 + FEEDBACK_BATCH, n)
            err = np.empty((w.shape[0], j1 - j0))
            for j in range(j0, j1):
                qj = np.clip(np.rint(wb[:, j] / row_steps), -(MAX_INDEX - 1), MAX_INDEX - 1)
                q[:, start + j] = qj
                e = (wb[:, j] - qj * row_steps) / u[j, j]
                wb[:, j:j1] -= np.outer(e, u[j, j:j1])
                err[:, j - j0] = e
            wb[:, j1:] -= err @ u[j0:j1, j1:]
    return q


def choose_tables(
    symbols: np.ndarray, q_lo: int, n_symbols: int, max_tables: int = 16
) -> static_rans.Tables:
    """The tables that code ``symbols`` (R, m; n_symbols with the escape) in the fewest
    bits, tables and row groups included: rows ranked by their spread (mean distance of
    their symbols from the most common one) and cut into 1, 2, 4, 8 or 16 groups of equal
    size (at most ``max_tables``, at most one per row), each group with 1, 3, 5 or 9
    tables chosen by the sign and size of the previous symbol's grid index
    (:data:`CONTEXT_CHOICES`), each table from its own counts."""
    rows = symbols.shape[0]
    finest = max(c for c in TABLE_CHOICES if c <= max(1, min(max_tables, rows)))
    most = max(CONTEXT_CHOICES)
    order = np.argsort(_spread(symbols, n_symbols), kind="stable")
    group = np.empty(rows, dtype=np.int64)
    group[order] = (np.arange(rows) * finest) // max(rows, 1)
    counts = _counts(symbols, group, static_rans.symbol_contexts(q_lo, n_symbols - 1, most),
                     most, finest)  # fmt: skip
    best: tuple[float, int, int] | None = None
    for k in CONTEXT_CHOICES:
        merged = _merge_contexts(counts, k)
        for c in (c for c in TABLE_CHOICES if c <= finest and c * k <= 256):
            sums = merged.reshape(c, finest // c, k, n_symbols).sum(axis=1).reshape(c * k, -1)
            total = _entropy_bits(sums) + table_bits(static_rans.normalize(sums))
            total += rows * math.log2(c)
            if best is None or total < best[0]:
                best = (total, c, k)
    assert best is not None
    _, c, k = best
    sums = _merge_contexts(counts, k).reshape(c, finest // c, k, n_symbols).sum(axis=1)
    return static_rans.Tables(
        static_rans.normalize(sums.reshape(c * k, -1)),
        (group // (finest // c)).astype(np.uint8),
        static_rans.symbol_contexts(q_lo, n_symbols - 1, k),
        k,
    )


def _symbols(q: np.ndarray, q_lo: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint16 symbols of grid indices: q - q_lo, or ``width``, the escape, outside the
    alphabet; the mask of escaped positions, None when there are none)."""
    k = kernels.load("grid_c")
    if k is not None:
        symbols, n_escaped = k.symbols_of(q, q_lo, width)
        return symbols, (symbols == width) if n_escaped else None
    escaped = (q < q_lo) | (q >= q_lo + width)
    symbols = np.where(escaped, width, q - q_lo).astype(np.uint16)
    return symbols, escaped if escaped.any() else None


def _spread(symbols: np.ndarray, n_symbols: int) -> np.ndarray:
    """Each row's mean distance of its symbols from the most common symbol of all."""
    k = kernels.load("grid_c")
    if k is not None and symbols.shape[1] > 0:
        return k.spread(symbols, n_symbols)
    center = int(np.argmax(np.bincount(symbols.reshape(-1), minlength=n_symbols)))
    return np.abs(symbols.astype(np.int32) - center).mean(axis=1)


def _counts(
    symbols: np.ndarray, group: np.ndarray, context_of: np.ndarray, contexts: int, groups: int
) -> np.ndarray:
    """Counts (groups, contexts, symbols) of each row's symbols by its group and the
    context of the symbol before (0 for the first of a row)."""
    k = kernels.load("grid_c")
    if k is not None:
        return k.count(symbols, group, context_of, contexts, groups)
    n_symbols = context_of.shape[0]
    ctx = np.zeros(symbols.shape, dtype=np.int64)
    ctx[:, 1:] = context_of.astype(np.int64)[symbols[:, :-1]]
    key = ((group[:, None] * contexts + ctx) * n_symbols + symbols).reshape(-1)
    return np.bincount(key, minlength=groups * contexts * n_symbols).reshape(
        groups, contexts, n_symbols
    )


def _merge_contexts(counts: np.ndarray, k: int) -> np.ndarray:
    """Counts by (group, context, symbol) of the largest context choice, merged into
    ``k`` contexts: context c of the largest (half-width H) is context h + sign(c - H) *
    min(h, |c - H|) of k (half-width h), as :func:`static_rans.symbol_contexts` would
    give it; the escape's (the last) stays the last."""
    most = counts.shape[1]
    big, half = (most - 1) // 2, (k - 1) // 2
    c = np.arange(most) - big
    into = half + np.sign(c) * np.minimum(np.abs(c), half)
    into[-1] = k - 1
    out = np.zeros((counts.shape[0], k, counts.shape[2]), dtype=counts.dtype)
    for src, dst in enumerate(into):
        out[:, dst] += counts[:, src]
    return out


def _entropy_bits(counts: np.ndarray) -> float:
    """Bits of coding each row's counts with the row's own distribution."""
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = np.where(counts > 0, counts * np.log2(total / np.maximum(counts, 1)), 0.0)
    return float(bits.sum())


def table_bits(freqs: np.ndarray) -> float:
    """What the tables cost in the side frame (their zstd size)."""
    raw = freqs.astype("<u2").tobytes()
    return 8.0 * len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw))
