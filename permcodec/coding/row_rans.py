"""``row-rans`` (FORMAT 4.5): each row's arrangement under the multiset model, the rows
split into lanes that each own a word segment, so lanes decode independently (a few at
a time on the CPU, all at once as GPU threads, :mod:`permcodec.torch.device_decode`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.dtypes import storage_dtype
from ..errors import FormatError, IntegrityError
from . import arrangement, rans, runs
from .base import SeededCoding, SeededParams, parse_lanes, rans_bytes


class RowRans(SeededCoding):
    name = "row-rans"
    since = 3

    def largest_run(self, params: SeededParams) -> int:
        """Runs of lanes stop growing at LANE_GROUP chunks; the last lane adds at most one."""
        rows, m = params.seed.rows, params.seed.m
        return min(rows * m, max(m, (runs.LANE_GROUP + 1) * runs.DECODE_CHUNK))

    def decode(self, params: SeededParams, payload: bytes) -> np.ndarray:
        """A run of lanes (or of one lane's rows) at a time: each run regenerates only
        its own rows of the init, so memory stays near the output plus one run, and a
        garbage payload fails in its first run."""
        compiled = runs.decode_compiled(self.name, params, payload)
        if compiled is not None:
            return compiled
        meta, seed = params.meta, params.seed
        name, rows, m = meta.name, seed.rows, seed.m
        states, lengths, words = split_segments(name, payload, params.lanes, rows, m)
        if rows * m == 0:
            if words.size or (states != rans.STATE_LOW).any():
                raise IntegrityError(f"tensor {name!r}: an empty tensor has coded data", name)
            return np.empty(meta.shape, dtype=storage_dtype(meta.dtype))
        bounds = rans.lane_bounds(rows, len(states))
        starts = np.zeros(len(states) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        init = runs.SeededRows(seed.spec, seed.key, meta.shape, meta.dtype, name)
        out = runs.LazyRows(rows, m, storage_dtype(meta.dtype))

        def run(lanes: tuple[int, int]) -> None:
            """Decode lanes [l0, l1) run by run, their states and word positions carried."""
            l0, l1 = lanes
            x, used = states[l0:l1], None
            seg = words[starts[l0] : starts[l1]]
            row_runs = runs.row_runs(bounds, lanes, m)
            for r0, r1 in row_runs:
                _, rc = init.classes(r0, r1)
                # several lanes decode in one run; a lane's sub-run holds rows of it alone
                lane_rows = (
                    bounds[l0 : l1 + 1] - r0
                    if len(row_runs) == 1
                    else np.array([0, r1 - r0], dtype=np.int64)
                )
                cls, x, used = rans.decode_rows_run(
                    x,
                    lengths[l0:l1],
                    seg,
                    rc.counts,
                    m,
                    name,
                    lane_rows,
                    used=used,
                    final=r1 == row_runs[-1][1],
                )
                out.put(r0, r1, arrangement.rebuild(cls, rc))

        runs.run_all(run, runs.lane_chunks(bounds, m))
        return out.result().reshape(meta.shape)


def encode(cls: np.ndarray, rc: arrangement.RowClasses, bound: float) -> tuple[dict, bytes]:
    """Entry fields and payload of rows of classes ``cls``."""
    lanes = rans.choose_segment_lanes(cls.shape[0], bound)
    payload = rans_bytes(*rans.encode_rows(cls, rc.counts, lanes))
    return {"coding": RowRans.name, "lanes": lanes, "bound_bits": bound}, payload


def split_segments(
    name: str, payload: bytes, lanes: Any, rows: int, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states, segment lengths, words) of a ``row-rans`` payload, every length
    checked against the payload and against the steps of its lane."""
    parse_lanes(lanes, name, rows)
    if len(payload) < 12 * lanes or (len(payload) - 12 * lanes) % 4:
        raise FormatError(
            f"tensor {name!r}: payload length {len(payload)} does not fit {lanes} lanes"
        )
    states = np.frombuffer(payload, dtype="<u8", count=lanes)
    lengths = np.frombuffer(payload, dtype="<u4", count=lanes, offset=8 * lanes)
    n_words = (len(payload) - 12 * lanes) // 4
    if int(lengths.astype(np.int64).sum()) != n_words:
        raise FormatError(
            f"tensor {name!r}: segment lengths add up to {int(lengths.sum())} words, "
            f"the payload holds {n_words}"
        )
    steps = np.diff(rans.lane_bounds(rows, lanes)) * m
    if (lengths > steps).any():  # a step reads at most one word
        raise FormatError(f"tensor {name!r}: a lane's segment is longer than its steps")
    words = np.frombuffer(payload, dtype="<u4", count=n_words, offset=12 * lanes)
    return states, lengths, words
