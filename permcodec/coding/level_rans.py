"""``level-rans`` (FORMAT 4.7): a ``levels`` tensor's arrangement, one static table per
initial class.

Every row of a levels tensor holds the same few values (its classes), and training by
permutation moves a value from its initial level to a neighbouring one far more often
than anywhere else. So the class at each position is coded with a table chosen by the
class of the *initial* value there: a C x C table of frequencies per tensor, learned
from the tensor itself. Decoding is a table lookup per weight, and the tables take the
correlation with the init that ``bucket-rans`` models with weights per rank distance.
Rows are spread over lanes as in ``row-rans`` (lanes decode independently); a decoded
row must hold its multiset exactly, so the tensor is always an arrangement of its init.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import kernels
from ..core.dtypes import from_float32, order_keys, storage_dtype
from ..core.initializers import level_counts, level_values
from ..errors import FormatError, IntegrityError
from ..kernels.contract import INCONSISTENT, STATE_LOW, lane_bounds, stream_error
from . import arrangement, runs
from .base import Meta, SeededCoding, SeededParams, parse_seeded, rans_bytes
from .rans import encode_segments
from .row_rans import split_segments
from .static_rans import lanes_step, normalize

#: Frequencies of a table sum to 2**TABLE_BITS.
TABLE_BITS = 12
TABLE_ONE = 1 << TABLE_BITS
#: A row's scratch while decoding (four lanes' contexts and symbols, ranking), bytes per value.
ROW_BYTES = 40
#: Values the numpy reference decodes at a step (a group of lanes), bounding its memory.
REF_VALUES = 1 << 16
#: Most classes a levels row has (2 * 128 levels and zero).
MAX_CLASSES = 257
#: The writer's lanes come in groups of LANE_GROUP (a decoder steps a group's lanes
#: together, so their latencies overlap), a group per GROUP_VALUES values.
LANE_GROUP = 4
GROUP_VALUES = 1 << 16


def level_classes(spec: dict[str, Any], dtype: str, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The classes every row of a levels tensor holds (FORMAT 5.1): their storage values
    in order-key order and how many of each a row has."""
    if m == 0:
        return np.empty(0, dtype=storage_dtype(dtype)), np.empty(0, dtype=np.int64)
    values = np.asarray(level_values(int(spec["levels"]), float(spec["scale"])))
    counts = level_counts(int(spec["levels"]), spec["density"], m)
    row = from_float32(np.repeat(values.astype(np.float32), counts).reshape(1, m), dtype)
    rc = arrangement.row_classes(row, order_keys(row, dtype))
    return rc.values[0, : rc.n_classes], rc.counts[0, : rc.n_classes]


class LevelRans(SeededCoding):
    name = "level-rans"
    since = 7

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> SeededParams:
        params = SeededParams(meta, *parse_seeded(fields, meta))
        if params.seed.spec["kind"] != "levels":
            raise FormatError(f"tensor {meta.name!r}: level-rans needs a levels spec")
        return params

    def working_bytes(self, params: SeededParams) -> int:
        """The tables' lookup model and one row's scratch (per thread)."""
        model = (2 * TABLE_ONE + 4 * MAX_CLASSES) * MAX_CLASSES
        return model + ROW_BYTES * params.seed.m

    def decode(self, params: SeededParams, payload: bytes) -> np.ndarray:
        compiled = runs.decode_compiled(self.name, params, payload)
        if compiled is not None:
            return compiled
        return decode_ref(params, payload)


def split_payload(
    params: SeededParams, payload: bytes
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(class values, class counts, tables, states, segment lengths, words), checked."""
    meta, seed = params.meta, params.seed
    values, counts = level_classes(seed.spec, meta.dtype, seed.m)
    c = len(values)
    if len(payload) < 2 * c * c:
        raise FormatError(
            f"tensor {meta.name!r}: payload length {len(payload)} does not fit its {c} tables"
        )
    freqs = np.frombuffer(payload, dtype="<u2", count=c * c).reshape(c, c)
    sums = freqs.astype(np.int64).sum(axis=1)
    if (sums != TABLE_ONE).any():
        bad = int(np.nonzero(sums != TABLE_ONE)[0][0])
        raise FormatError(
            f"tensor {meta.name!r}: frequency table {bad} does not sum to {TABLE_ONE}"
        )
    states, lengths, words = split_segments(
        meta.name, payload[2 * c * c :], params.lanes, seed.rows, seed.m
    )
    if ((states < STATE_LOW) | (states >= np.uint64(1 << 63))).any():
        raise IntegrityError(f"tensor {meta.name!r}: coder state out of range", meta.name)
    return values, counts, freqs, states, lengths, words


def decode_ref(params: SeededParams, payload: bytes) -> np.ndarray:
    """The numpy reference: a group of lanes at a time (at most :data:`REF_VALUES` values
    a step, so memory stays near the output), the group's lanes stepping together round
    by round (a round decodes the next row of each), each row's tables chosen by its
    initial classes."""
    meta, seed = params.meta, params.seed
    name, rows, m = meta.name, seed.rows, seed.m
    values, counts, freqs, states, lengths, words = split_payload(params, payload)
    out = np.empty((rows, m), dtype=storage_dtype(meta.dtype))
    if rows * m == 0:
        if words.size or (states != STATE_LOW).any():
            raise IntegrityError(f"tensor {name!r}: an empty tensor has coded data", name)
        return out.reshape(meta.shape)
    bounds = lane_bounds(rows, len(states))
    ends = np.cumsum(lengths.astype(np.int64))
    f = freqs.astype(np.int64)
    model = (np.stack([np.repeat(np.arange(len(values)), row) for row in f]), f,
             np.cumsum(f, axis=1) - f)  # fmt: skip
    init = runs.SeededRows(seed.spec, seed.key, meta.shape, meta.dtype, name)
    class_keys = order_keys(values.reshape(1, -1), meta.dtype)[0]
    stream = words.astype(np.int64)
    group = max(1, REF_VALUES // m)
    for l0 in range(0, len(states), group):
        l1 = min(len(states), l0 + group)
        ptr, end = ends[l0:l1] - lengths[l0:l1].astype(np.int64), ends[l0:l1]
        x = states[l0:l1].astype(np.int64)
        first, last = bounds[l0:l1], bounds[l0 + 1 : l1 + 1]
        for t in range(int((last - first).max())):
            row = first + t
            live = row < last
            ctx = np.zeros((l1 - l0, m), dtype=np.int64)
            for k in np.nonzero(live)[0]:
                ctx[k] = init_classes(init, int(row[k]), class_keys)
            sym = np.zeros((l1 - l0, m), dtype=np.int64)
            for j in range(m):
                x, sym[:, j] = lanes_step(x, ctx[:, j], live, model, (ptr, end, stream), name,
                                          TABLE_BITS)  # fmt: skip
            for k in np.nonzero(live)[0]:
                if (np.bincount(sym[k], minlength=len(values)) != counts).any():
                    raise IntegrityError(f"tensor {name!r}: row {int(row[k])} is not an "
                                         "arrangement of its initial values", name)  # fmt: skip
                out[row[k]] = values[sym[k]]
        if (ptr != end).any() or (x != STATE_LOW).any():
            raise stream_error(INCONSISTENT, name)
    return out.reshape(meta.shape)


def init_classes(init: runs.SeededRows, r: int, class_keys: np.ndarray) -> np.ndarray:
    """The class of the initial value at each position of row ``r``: its index among the
    row's classes, whose order keys are ``class_keys`` (ascending)."""
    return np.searchsorted(class_keys, order_keys(init.rows(r, r + 1), init.dtype)[0])


def tables(cls: np.ndarray, init_cls: np.ndarray, classes: int) -> np.ndarray:
    """(C, C) uint16: table i holds the frequencies (summing to 2**12) of the trained
    classes at positions whose initial class is i; every pair that occurs gets >= 1."""
    joint = np.bincount(
        (init_cls.astype(np.int64) * classes + cls).ravel(), minlength=classes * classes
    ).reshape(classes, classes)
    return normalize(joint, TABLE_ONE)


def choose_lanes(rows: int, m: int) -> int:
    """A group of :data:`LANE_GROUP` lanes per :data:`GROUP_VALUES` values (at least
    one group), at most one lane per row."""
    return max(1, min(rows, LANE_GROUP * max(1, rows * m // GROUP_VALUES)))


def encode(
    cls: np.ndarray, init_cls: np.ndarray, classes: int, bound: float
) -> tuple[dict[str, Any], bytes]:
    """Entry fields and payload of rows of classes ``cls`` whose initial classes are
    ``init_cls`` (both (R, m), indices into the ``classes`` classes of every row)."""
    rows, m = cls.shape
    lanes = choose_lanes(rows, m)
    freqs = tables(cls, init_cls, classes) if classes else np.zeros((0, 0), np.uint16)
    k = kernels.load("seeded_c")
    if k is not None:
        coded = k.level_encode(cls, init_cls, freqs, lanes)
    else:
        f = freqs.astype(np.int64)
        start = np.cumsum(f, axis=1) - f
        coded = encode_segments(start[init_cls, cls], f[init_cls, cls], lanes, TABLE_BITS)
    payload = freqs.astype("<u2").tobytes() + rans_bytes(*coded)
    return {"coding": LevelRans.name, "lanes": lanes, "bound_bits": bound}, payload
