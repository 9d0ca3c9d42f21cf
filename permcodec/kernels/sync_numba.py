"""Numba kernels for LaPerm's sync on CPU float32 rows: rank every weight, then place
the initial values by rank, with the same result as ``torch.argsort(stable=True)`` and
a scatter.

The ranking sorts one uint32 per weight with numpy's SIMD sort: the high bits of its
order key and, in the low ``b`` bits, its index (``2**b >= m``). Weights whose keys
agree in the high bits (values within about 2**(b-23) of each other, relative) end up
next to each other in index order; :func:`place` puts each such run in full key order
before it places the values, so the ranking is exact.
"""

from __future__ import annotations

import numba
import numpy as np

from . import contract

#: Rows longer than this leave too few key bits beside the index; they use torch.
MAX_M = 1 << 16


_order_key = numba.njit(cache=True, nogil=True)(contract.order_key)


@numba.njit(cache=True, nogil=True)
def _key(b: np.int32) -> np.uint32:
    """Unsigned key in float order of float32 bits ``b``, -0.0 equal to +0.0."""
    if b == -2147483648:  # -0.0
        b = np.int32(0)
    return np.uint32(_order_key(np.int64(b), 32) + 2147483648)


def index_bits(m: int) -> int:
    """Bits that hold an index below m."""
    return max(1, (m - 1).bit_length())


@numba.njit(cache=True, nogil=True)
def pack(w: np.ndarray, b: int) -> tuple[np.ndarray, bool]:
    """Per weight, uint32 (high bits of its key | its index); False on NaN."""
    rows, m = w.shape
    bits = w.view(np.int32)
    low = np.uint32((1 << b) - 1)
    out = np.empty((rows, m), dtype=np.uint32)
    for r in range(rows):
        for j in range(m):
            x = bits[r, j]
            if (x & 0x7FFFFFFF) > 0x7F800000:
                return out, False
            out[r, j] = (_key(x) & ~low) | np.uint32(j)
    return out, True


@numba.njit(cache=True, nogil=True)
def place(packed_sorted: np.ndarray, b: int, sorted_init: np.ndarray, w: np.ndarray) -> None:
    """Order each run of equal high bits by full key (ties by index), then write
    w[r, index of the k-th smallest] = sorted_init[r, k]. Runs are rare (values within
    about 2**(b-23) of each other); a run's weights are read before any of them is
    written, since every index is written once, in rank order."""
    rows, m = w.shape
    bits = w.view(np.int32)
    low = np.uint32((1 << b) - 1)
    order = np.empty(m, dtype=np.int64)
    keys = np.empty(m, dtype=np.uint32)
    for r in range(rows):
        row = packed_sorted[r]
        k = 0
        while k < m:
            high = row[k] & ~low
            if k + 1 == m or (row[k + 1] & ~low) != high:
                w[r, np.int64(row[k] & low)] = sorted_init[r, k]
                k += 1
                continue
            stop = k + 1
            while stop < m and (row[stop] & ~low) == high:
                stop += 1
            for i in range(k, stop):
                order[i] = np.int64(row[i] & low)
                keys[i] = _key(bits[r, order[i]])
            for i in range(k + 1, stop):  # insertion sort of a (short) run
                kk, jj = keys[i], order[i]
                h = i - 1
                while h >= k and (keys[h] > kk or (keys[h] == kk and order[h] > jj)):
                    keys[h + 1] = keys[h]
                    order[h + 1] = order[h]
                    h -= 1
                keys[h + 1] = kk
                order[h + 1] = jj
            for i in range(k, stop):
                w[r, order[i]] = sorted_init[r, i]
            k = stop
