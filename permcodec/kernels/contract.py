"""The numeric contract that the numpy reference and every kernel share.

Constants of the generator and the coder, the kernels' status codes and the errors they
stand for, and the few integer helpers that numpy and Triton code compute the same way
(plain Python arithmetic; the C of csrc/ writes them out). Nothing here imports more
than numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import IntegrityError

# ---------------------------------------------------------------- Philox4x32-10

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF
ROUNDS = 10

# ---------------------------------------------------------------- rANS

PROB_BITS = 31
PROB_ONE = 1 << PROB_BITS
STATE_LOW = 1 << 31  # states live in [2**31, 2**63)
WORD_MASK = 0xFFFFFFFF

# ---------------------------------------------------------------- kernel statuses

OK = 0
INCONSISTENT = 1  # a step with frequency <= 0, or a stream that does not end at 2**31
ENDS_EARLY = 2  # a lane needs a word past the end of the stream
FALLBACK = 3  # input outside the kernel's domain: the reference takes it

_MESSAGES = {
    INCONSISTENT: "coded stream is inconsistent",
    ENDS_EARLY: "coded stream ends early",
}


def stream_error(status: int, name: str) -> IntegrityError:
    """The error a decoder raises for a bad ``status`` of tensor ``name``'s stream."""
    return IntegrityError(f"tensor {name!r}: {_MESSAGES[status]}", name)


def raise_for(status: int, name: str) -> None:
    """Raise :func:`stream_error` unless ``status`` is ``OK`` (or ``FALLBACK``)."""
    if status in _MESSAGES:
        raise stream_error(status, name)


# ---------------------------------------------------------------- integer helpers


def order_key(bits: Any, width: int) -> Any:
    """Integer keys whose order is the float order of IEEE values of ``width`` bits,
    given their bit patterns sign-extended to int64 (-0.0 sorts below +0.0; equal keys
    are equal bits). Works on Python ints, numpy arrays and torch tensors alike."""
    return bits ^ ((bits >> 63) & ((1 << (width - 1)) - 1))


def levels(k: int) -> int:
    """Depth of the implicit binary tree over k leaves (2**depth >= k)."""
    depth = 0
    while (1 << depth) < k:
        depth += 1
    return depth


def left_counts(m: int) -> tuple[np.ndarray, int]:
    """Implicit binary tree over m leaves (padded to 2**levels): entry n of node n
    holds how many real leaves its left subtree has. Returns (tree, levels)."""
    depth_total = 0
    while (1 << depth_total) < m:
        depth_total += 1
    top = 1 << depth_total
    tree = np.zeros(max(top, 1), dtype=np.int32)
    for depth in range(depth_total):
        span = top >> depth
        for k in range(1 << depth):
            lo = k * span
            tree[(1 << depth) + k] = max(0, min(m, lo + span // 2) - lo)
    return tree, depth_total


def lane_bounds(rows: int, lanes: int) -> np.ndarray:
    """First row of every lane of a ``row-rans`` stream and the end: lane l codes rows
    [b[l], b[l+1])."""
    return (np.arange(lanes + 1, dtype=np.int64) * rows) // lanes
