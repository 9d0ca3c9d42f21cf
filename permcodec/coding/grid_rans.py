"""``grid-rans`` (FORMAT 4.6, version 6): a trained tensor on a grid of steps per row.

For a model that was not trained by permutation: every value of row r is an integer
multiple q of the row's step (one of a few steps per tensor), coded with a static table
(one of a few per tensor) by :mod:`permcodec.coding.static_rans`; values too far out for
the grid (outliers) are escaped and stored exactly. The writer chooses the steps from
what each row costs the model (:mod:`permcodec.coding.fit`); the decoder only multiplies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from .. import kernels
from ..core.checks import is_int
from ..core.dtypes import FLOAT_DTYPES, from_float32, storage_dtype
from ..errors import FormatError
from ..kernels.contract import stream_error
from . import static_rans
from .base import Coding, Meta, Params, parse_lanes
from .raw import ZSTD_LEVEL, _unzstd
from .row_rans import split_segments

#: Most distinct steps a tensor may have (row step indices are u16).
MAX_STEPS = 1 << 16
#: Most frequency tables a tensor may have, all groups and contexts (row groups are u8).
MAX_TABLES = 256
#: Most tables per row group (contexts set by the previous symbol's sign and size); an
#: odd number.
MAX_CONTEXTS = 9
#: Grid indices stay below 2**24 in magnitude: exact in binary32, and a product with a
#: binary32 step is exact in binary64, so the value is one rounding of the exact product.
MAX_INDEX = 1 << 24


@dataclass(frozen=True)
class GridParams(Params):
    """The parsed fields of a ``grid-rans`` entry."""

    rows: int
    m: int
    steps: int  # S: distinct steps, listed in the side frame
    q_lo: int  # the grid index of symbol 0
    symbols: int  # A: grid symbols 0..A-1; symbol A escapes to an outlier
    tables: int  # C: row groups of tables
    contexts: int  # tables per group
    outliers: int  # K
    lanes: int
    side: int  # bytes of the side frame at the start of the payload

    @property
    def step_bytes(self) -> int:
        return 1 if self.steps <= 256 else 2

    @property
    def side_size(self) -> int:
        """Bytes the side frame declares: steps, row steps, row tables, tables, escapes
        per lane (when there are outliers) and the outliers."""
        size = 4 * self.steps + self.rows * (self.step_bytes + 1)
        size += self.tables * self.contexts * (self.symbols + 1) * 2
        if self.outliers:
            size += 4 * self.lanes + self.outliers * storage_dtype(self.meta.dtype).itemsize
        return size


def grid_rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, row length) of a tensor on a grid: ``flatten(1)`` rows, or one row."""
    n = math.prod(shape)
    if len(shape) < 2:
        return 1, n
    return shape[0], n // shape[0] if shape[0] else 0


class GridRans(Coding):
    name = "grid-rans"
    since = 6

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> GridParams:
        name = meta.name
        if meta.dtype not in FLOAT_DTYPES:
            raise FormatError(f"tensor {name!r}: grid tensors must be floating point")
        rows, m = grid_rows(meta.shape)
        steps = fields.get("steps")
        if not (is_int(steps) and 1 <= steps <= min(MAX_STEPS, max(rows, 1))):
            raise FormatError(f"tensor {name!r}: {steps!r} steps for {rows} rows")
        q_lo, symbols = fields.get("q_lo"), fields.get("symbols")
        if not (is_int(q_lo) and is_int(symbols)):
            raise FormatError(f"tensor {name!r}: malformed grid-rans entry")
        if not 1 <= symbols < static_rans.MAX_SYMBOLS:
            raise FormatError(f"tensor {name!r}: {symbols} grid symbols is out of range")
        if not (q_lo > -MAX_INDEX and q_lo + symbols - 1 < MAX_INDEX):
            raise FormatError(f"tensor {name!r}: grid indices beyond 2**24")
        tables, outliers, side = (fields.get(k) for k in ("tables", "outliers", "side"))
        contexts = fields.get("contexts")
        if not (is_int(tables) and 1 <= tables <= min(MAX_TABLES, max(rows, 1))):
            raise FormatError(f"tensor {name!r}: {tables!r} tables for {rows} rows")
        if not (is_int(contexts) and 1 <= contexts <= MAX_CONTEXTS and contexts % 2):
            raise FormatError(f"tensor {name!r}: {contexts!r} contexts out of range")
        if tables * contexts > MAX_TABLES:
            raise FormatError(f"tensor {name!r}: more than {MAX_TABLES} tables")
        if not (is_int(outliers) and 0 <= outliers <= rows * m):
            raise FormatError(f"tensor {name!r}: {outliers!r} outliers out of range")
        if not (is_int(side) and side >= 0):
            raise FormatError(f"tensor {name!r}: side length {side!r} out of range")
        lanes = parse_lanes(fields.get("lanes"), name, rows)
        return GridParams(
            meta,
            rows,
            m,
            int(steps),
            int(q_lo),
            int(symbols),
            int(tables),
            int(contexts),
            int(outliers),
            lanes,
            side,
        )

    def working_bytes(self, params: GridParams) -> int:
        """The symbols (u16 per value), the side arrays and one lookup table per table."""
        tables = params.tables * params.contexts
        return 2 * params.rows * params.m + params.side_size + tables * 2 * static_rans.TABLE_ONE

    def describe(self, params: GridParams) -> dict[str, Any]:
        return {
            "lanes": params.lanes,
            "steps": params.steps,
            "tables": params.tables,
            "contexts": params.contexts,
            "outliers": params.outliers,
        }

    def decode(self, params: GridParams, payload: bytes) -> np.ndarray:
        meta = params.meta
        if params.side > len(payload):
            raise FormatError(f"tensor {meta.name!r}: side frame longer than the payload")
        side = _unzstd(payload[: params.side], params.side_size, meta.name)
        steps, step_of, table_of, freqs, esc, outliers = _split_side(side, params)
        if params.outliers and int(esc.sum(dtype=np.int64)) != params.outliers:
            raise _bad_escapes(meta.name)
        static_rans.check_tables(freqs, meta.name)
        if not (np.isfinite(steps) & (steps > 0)).all():
            raise FormatError(f"tensor {meta.name!r}: grid steps must be finite and positive")
        if (step_of >= params.steps).any() or (table_of >= params.tables).any():
            raise FormatError(f"tensor {meta.name!r}: a row names a step or table it lacks")
        states, lengths, words = split_segments(
            meta.name, payload[params.side :], params.lanes, params.rows, params.m
        )
        if params.rows * params.m == 0:
            return np.empty(meta.shape, dtype=storage_dtype(meta.dtype))
        ctx_of = static_rans.symbol_contexts(params.q_lo, params.symbols, params.contexts)
        tables = static_rans.Tables(freqs, table_of, ctx_of, params.contexts)
        row_steps = steps.astype(np.float64)[step_of]
        k = kernels.load("grid_c")
        if k is not None and storage_dtype(meta.dtype) == np.float32:
            return _decode_values(k, states, lengths, words, tables, params, row_steps, esc,
                                  outliers)  # fmt: skip
        sym, escapes = static_rans.decode(states, lengths, words, tables, params.m, meta.name)
        if (params.outliers and (escapes != esc).any()) or (not params.outliers and escapes.any()):
            raise _bad_escapes(meta.name)
        values = grid_values(sym, row_steps, params.q_lo, params.symbols, meta.dtype)
        if params.outliers:
            values[sym == params.symbols] = outliers
        return values.reshape(meta.shape)


def _decode_values(
    k: Any,
    states: np.ndarray,
    lengths: np.ndarray,
    words: np.ndarray,
    tables: static_rans.Tables,
    params: GridParams,
    row_steps: np.ndarray,
    esc: np.ndarray,
    outliers: np.ndarray,
) -> np.ndarray:
    """The float32 values of a stream in one compiled pass (symbols and values fused,
    nothing but the values kept); the same checks and errors as the reference."""
    name = params.meta.name
    static_rans.check_stream(states, tables.freqs, name)
    lane_outliers = esc if params.outliers else np.zeros(params.lanes, dtype=np.uint32)
    status, values = k.decode_values(states, lengths, words, tables.table_of, tables.freqs,
                                     tables.ctx_of, tables.contexts, params.m, row_steps,
                                     params.q_lo, outliers, lane_outliers)  # fmt: skip
    if status == k.BAD_ESCAPES:
        raise _bad_escapes(name)
    if status:
        raise stream_error(status, name)
    return values.reshape(params.meta.shape)


def _bad_escapes(name: str) -> FormatError:
    return FormatError(f"tensor {name!r}: escapes do not match the outliers")


def grid_values(
    symbols: np.ndarray, row_steps: np.ndarray, q_lo: int, escape: int, dtype: str
) -> np.ndarray:
    """Storage values of grid symbols (R, m): RN32((q_lo + s) * step of the row), cast to
    ``dtype`` (FORMAT 4.6.3); escaped positions hold 0 for the caller to fill."""
    k = kernels.load("grid_c")
    if k is not None:
        return from_float32(k.values(symbols, row_steps, q_lo, escape), dtype)
    q = symbols.astype(np.float64) + float(q_lo)
    q[symbols == escape] = 0.0
    return from_float32((q * row_steps[:, None]).astype(np.float32), dtype)


def _split_side(
    side: bytes, p: GridParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, row steps, row groups, frequency tables (C * contexts, A + 1), escapes
    per lane, outliers)."""
    at = 0

    def take(dtype: str, count: int) -> np.ndarray:
        nonlocal at
        a = np.frombuffer(side, dtype=dtype, count=count, offset=at)
        at += a.nbytes
        return a

    steps = take("<f4", p.steps)
    step_of = take("u1" if p.step_bytes == 1 else "<u2", p.rows)
    table_of = take("u1", p.rows)
    n_tables = p.tables * p.contexts
    freqs = take("<u2", n_tables * (p.symbols + 1)).reshape(n_tables, p.symbols + 1)
    esc = take("<u4", p.lanes if p.outliers else 0)
    outliers = take(storage_dtype(p.meta.dtype).str, p.outliers if p.outliers else 0)
    return steps, step_of, table_of, freqs, esc, outliers


@dataclass(frozen=True)
class Grid:
    """A tensor placed on a grid, ready to code: symbols (R, m; the last symbol of the
    tables escapes), each row's step index, the steps, the tables that code the symbols,
    the outliers (storage values of the escaped positions, in C order) and the tensor a
    decoder will rebuild (storage values, the input's shape)."""

    symbols: np.ndarray
    step_of: np.ndarray
    steps: np.ndarray  # float32
    tables: static_rans.Tables
    q_lo: int
    outliers: np.ndarray
    decoded: np.ndarray


def encode(grid: Grid, lanes: int) -> tuple[dict[str, Any], bytes]:
    """Entry fields and payload of a tensor on a grid."""
    rows = grid.symbols.shape[0]
    tables = grid.tables
    a = tables.freqs.shape[1] - 1
    states, lengths, words = static_rans.encode(grid.symbols, tables, lanes)
    parts = [
        grid.steps.astype("<f4").tobytes(),
        grid.step_of.astype("u1" if len(grid.steps) <= 256 else "<u2").tobytes(),
        tables.table_of.astype("u1").tobytes(),
        tables.freqs.astype("<u2").tobytes(),
    ]
    if len(grid.outliers):
        bounds = static_rans.lane_bounds(rows, lanes)
        per_row = (grid.symbols == a).sum(axis=1)
        per_lane = np.add.reduceat(per_row, bounds[:-1]) if rows else per_row
        parts += [per_lane.astype("<u4").tobytes(), grid.outliers.tobytes()]
    side = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(b"".join(parts))
    coded = states.astype("<u8").tobytes() + lengths.astype("<u4").tobytes()
    coded += words.astype("<u4").tobytes()
    fields = {
        "coding": GridRans.name,
        "steps": len(grid.steps),
        "q_lo": int(grid.q_lo),
        "symbols": int(a),
        "tables": int(tables.freqs.shape[0] // tables.contexts),
        "contexts": int(tables.contexts),
        "outliers": len(grid.outliers),
        "lanes": int(lanes),
        "side": len(side),
    }
    return fields, side + coded
