"""Numba kernel for :func:`permcodec.core.philox.words`, bit-identical to it.

The numpy generator splits every 32x32-bit product into pieces below 2**49 so that it
runs unchanged on torch; here one uint64 product per multiplication does, in a single
pass over the blocks without temporaries.
"""

from __future__ import annotations

import numba
import numpy as np

from .contract import M0, M1, MASK32, ROUNDS, W0, W1

_M0, _M1, _W0, _W1 = np.uint64(M0), np.uint64(M1), np.uint64(W0), np.uint64(W1)
_MASK, _SHIFT = np.uint64(MASK32), np.uint64(32)


@numba.njit(cache=True, nogil=True)
def _blocks(b0: int, n_blocks: int, purpose: int, k0: int, k1: int) -> np.ndarray:
    """Words of blocks b0 .. b0 + n_blocks - 1 (4 per block), as int64."""
    out = np.empty(4 * n_blocks, dtype=np.int64)
    for i in range(n_blocks):
        block = np.uint64(b0 + i)
        c0, c1 = block & _MASK, block >> _SHIFT
        c2, c3 = np.uint64(purpose), np.uint64(0)
        key0, key1 = np.uint64(k0), np.uint64(k1)
        for _ in range(ROUNDS):
            p0 = _M0 * c0
            p1 = _M1 * c2
            c0, c1, c2, c3 = (
                (p1 >> _SHIFT) ^ c1 ^ key0,
                p1 & _MASK,
                (p0 >> _SHIFT) ^ c3 ^ key1,
                p0 & _MASK,
            )
            key0, key1 = (key0 + _W0) & _MASK, (key1 + _W1) & _MASK
        out[4 * i] = np.int64(c0)
        out[4 * i + 1] = np.int64(c1)
        out[4 * i + 2] = np.int64(c2)
        out[4 * i + 3] = np.int64(c3)
    return out


def words(key: tuple[int, int], purpose: int, start: int, stop: int) -> np.ndarray:
    """32-bit words ``start..stop-1`` of a stream, as an int64 array."""
    if stop <= start:
        return np.zeros(0, dtype=np.int64)
    b0, b1 = start // 4, (stop + 3) // 4
    flat = _blocks(b0, b1 - b0, purpose, key[0], key[1])
    return flat[start - 4 * b0 : stop - 4 * b0]


@numba.njit(cache=True, nogil=True)
def _affine(w: np.ndarray, a: float, span: float) -> np.ndarray:
    out = np.empty(w.shape[0], dtype=np.float64)
    for i in range(w.shape[0]):
        out[i] = a + span * ((np.float64(w[i]) + 0.5) * 2.0**-32)
    return out


def uniform(
    key: tuple[int, int], purpose: int, start: int, stop: int, a: float, b: float
) -> np.ndarray:
    """``a + (b - a) * u`` of the uniforms u = (word + 1/2) 2**-32 of words
    ``start..stop-1`` (float64, as numpy rounds each operation)."""
    return _affine(words(key, purpose, start, stop), a, b - a)
