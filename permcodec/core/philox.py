"""Philox4x32-10, the counter-based generator behind every stored random value.

Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC 2011). Written with
64-bit signed integer arithmetic only (no overflow anywhere), so numpy and torch on CPU
or CUDA give the same words. A stream is a 64-bit key; word ``i`` of purpose ``p`` is
lane ``i % 4`` of the block at counter ``(i // 4, p)``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .. import kernels
from ..kernels.contract import M0, M1, MASK32, ROUNDS, W0, W1
from .ops import NUMPY, NumpyOps

#: Purposes: independent sub-streams of one tensor's key.
VALUES, MASK, SIGN = 0, 1, 2


def stream_key(seed: int, name: str) -> tuple[int, int]:
    """Derive a tensor's 64-bit Philox key from the model seed and the tensor name.

    BLAKE2b-64 of ``seed`` (8 bytes, little-endian) followed by the UTF-8 name, with
    personalisation ``b"permcodec-key"``; the digest's two little-endian halves.
    """
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}")
    h = hashlib.blake2b(digest_size=8, person=b"permcodec-key")
    h.update(seed.to_bytes(8, "little"))
    h.update(name.encode("utf-8"))
    d = h.digest()
    return int.from_bytes(d[:4], "little"), int.from_bytes(d[4:], "little")


def _mulhilo(m: int, a: Any) -> tuple[Any, Any]:
    """High and low 32-bit halves of m * a, a < 2**32, using products below 2**49."""
    p_lo = a * (m & 0xFFFF)
    p_hi = a * (m >> 16)
    s = p_lo + ((p_hi & 0xFFFF) << 16)
    return ((p_hi >> 16) + (s >> 32)) & MASK32, s & MASK32


def philox4x32(c0: Any, c1: Any, c2: Any, c3: Any, k0: int, k1: int) -> tuple[Any, ...]:
    """Ten Philox rounds on int64 arrays of 32-bit counter words; returns 4 word arrays."""
    for _ in range(ROUNDS):
        hi0, lo0 = _mulhilo(M0, c0)
        hi1, lo1 = _mulhilo(M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
    return c0, c1, c2, c3


def words(key: tuple[int, int], purpose: int, start: int, stop: int, xp: NumpyOps = NUMPY) -> Any:
    """32-bit words ``start..stop-1`` of a stream, as an int64 array."""
    if type(xp) is NumpyOps and (fast := kernels.load("philox")) is not None:
        return fast.words(key, purpose, start, stop)
    if stop <= start:
        return xp.arange(0, 0)
    b0, b1 = start // 4, (stop + 3) // 4
    block = xp.arange(b0, b1)
    zero = block * 0
    out = philox4x32(block & MASK32, block >> 32, zero + purpose, zero, key[0], key[1])
    flat = xp.stack(list(out), axis=1).reshape(-1)
    return flat[start - 4 * b0 : stop - 4 * b0]


#: 2**-32: a word w is the uniform (w + 1/2) 2**-32 in the open interval (0, 1).
TWO_POW_M32 = 2.0**-32


def uniform(
    key: tuple[int, int],
    purpose: int,
    start: int,
    stop: int,
    a: float,
    b: float,
    xp: NumpyOps = NUMPY,
) -> Any:
    """float64 values ``a + (b - a) * u`` of the uniforms u = (word + 1/2) 2**-32 of
    words ``start..stop-1`` (u exact in float64; then one rounding per operation)."""
    if type(xp) is NumpyOps and (fast := kernels.load("philox")) is not None:
        return fast.uniform(key, purpose, start, stop, float(a), float(b))
    u = (xp.float64(words(key, purpose, start, stop, xp)) + 0.5) * TWO_POW_M32
    return a + (b - a) * u
