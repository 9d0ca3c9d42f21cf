"""Putting a trained tensor on a grid: the encoder side of ``grid-rans``.

Given the step each row should have (the allocator's choice, :mod:`permcodec.coding.fit`),
:func:`fit_grid` snaps the steps to a few distinct values, rounds every value to its
row's grid, escapes the few values too far out for the alphabet (kept exactly), and
groups the rows into the static tables that code their symbols in the fewest bits.
"""

from __future__ import annotations

import math

import numpy as np
import zstandard

from ..core.dtypes import as_float64
from . import static_rans
from .grid_rans import MAX_INDEX, Grid, grid_rows, grid_values
from .raw import ZSTD_LEVEL

#: Steps are snapped to powers of 2**(1/STEPS_PER_OCTAVE): rows whose ideal steps differ
#: by less share a step (an allocation off by under 4.5% in step costs nothing measurable).
STEPS_PER_OCTAVE = 8
#: Grid symbols of a tensor at most (the escape comes on top): indices beyond the most
#: populated window of this width are outliers.
MAX_GRID_SYMBOLS = 2048
#: Tables a tensor may use at most, tried in these numbers (cheapest total wins).
TABLE_CHOICES = (1, 2, 4, 8, 16)


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
    array: np.ndarray, dtype: str, desired_steps: np.ndarray, max_tables: int = 16
) -> Grid:
    """``array`` (storage values of a float dtype) on the grid of ``desired_steps`` (one
    per row, :func:`grid_rows`), with its tables chosen (:func:`choose_tables`)."""
    rows, m = grid_rows(tuple(array.shape))
    values = as_float64(array, dtype).reshape(rows, m)
    steps, step_of = snap_steps(desired_steps)
    row_steps = steps.astype(np.float64)[step_of]
    q = grid_indices(values, row_steps)
    q_lo, a = alphabet(q)
    escaped = (q < q_lo) | (q >= q_lo + a)
    symbols = np.where(escaped, a, q - q_lo).astype(np.uint16)
    table_of, freqs = choose_tables(symbols, a + 1, max_tables)
    outliers = np.ascontiguousarray(array).reshape(rows, m)[escaped]
    decoded = grid_values(symbols, row_steps, q_lo, a, dtype)
    decoded[escaped] = outliers
    return Grid(
        symbols,
        step_of,
        table_of,
        steps,
        freqs,
        q_lo,
        outliers,
        decoded.reshape(array.shape),
    )


def choose_tables(
    symbols: np.ndarray, n_symbols: int, max_tables: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(table of each row, frequency tables): rows ranked by their spread (mean distance
    of their symbols from the most common one) and cut into 1, 2, 4, 8 or 16 groups of
    equal size (at most ``max_tables``, at most one per row), each group coded with the
    table of its own counts; the number whose symbols, tables and row indices cost the
    fewest bits wins."""
    rows = symbols.shape[0]
    finest = max(c for c in TABLE_CHOICES if c <= max(1, min(max_tables, rows)))
    center = int(np.argmax(np.bincount(symbols.reshape(-1), minlength=n_symbols)))
    spread = np.abs(symbols.astype(np.int32) - center).mean(axis=1)
    order = np.argsort(spread, kind="stable")
    group = np.empty(rows, dtype=np.int64)
    group[order] = (np.arange(rows) * finest) // max(rows, 1)
    counts = np.stack(
        [np.bincount(symbols[group == g].reshape(-1), minlength=n_symbols) for g in range(finest)]
    )
    best: tuple[float, int] | None = None
    for c in (c for c in TABLE_CHOICES if c <= finest):
        sums = counts.reshape(c, finest // c, n_symbols).sum(axis=1)
        total = _entropy_bits(sums) + table_bits(static_rans.normalize(sums))
        total += rows * math.log2(c)
        if best is None or total < best[0]:
            best = (total, c)
    assert best is not None
    c = best[1]
    sums = counts.reshape(c, finest // c, n_symbols).sum(axis=1)
    return (group // (finest // c)).astype(np.uint8), static_rans.normalize(sums)


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
