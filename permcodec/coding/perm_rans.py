"""``perm-rans`` (FORMAT 4.3): each row's arrangement under the multiset model, rows
interleaved over groups of lanes that share one word stream.

Format 1's only seeded coding. The writer now prefers ``row-rans``, whose lanes decode
independently; this module still reads every ``perm-rans`` file.
"""

from __future__ import annotations

import numpy as np

from ..core.dtypes import storage_dtype
from . import arrangement, rans, runs
from .base import SeededCoding, SeededParams, split_rans


class PermRans(SeededCoding):
    name = "perm-rans"
    since = 1

    def largest_run(self, params: SeededParams) -> int:
        return runs.group_run_values(params.seed.rows, params.seed.m, params.lanes)

    def decode(self, params: SeededParams, payload: bytes) -> np.ndarray:
        """A run of whole groups at a time: each run regenerates only its own rows of
        the init, so memory stays near the output plus one run."""
        compiled = runs.decode_compiled(self.name, params, payload)
        if compiled is not None:
            return compiled
        meta, seed = params.meta, params.seed
        name, rows, m = meta.name, seed.rows, seed.m
        states, words, _ = split_rans(name, payload, 0, params.lanes, None, rows)
        if rows * m == 0:  # the reference checks that the stream is empty
            rans.decode(states, words, np.zeros((rows, 0), np.int64), m, name)
            return np.empty(meta.shape, dtype=storage_dtype(meta.dtype))
        init = runs.SeededRows(seed.spec, seed.key, meta.shape, meta.dtype, name)
        stream = runs.Stream(states, words, rows, m, name)

        def run(r0: int, r1: int) -> np.ndarray:
            _, rc = init.classes(r0, r1)
            return arrangement.rebuild(stream.classes(r1, rc.counts), rc)

        out = runs.fill_rows(rows, m, storage_dtype(meta.dtype), stream.runs(), run)
        return out.reshape(meta.shape)
