"""Resource limits a reader enforces before it allocates anything a file asks for.

A `.perm` file can legitimately be tiny and decode to a large tensor (a constant
initializer costs no bits), so the size a file claims cannot be judged from the file's
own size. Instead the memory its decoding takes, the decoded tensors plus the working
set of one run of rows (:func:`permcodec.format.entry.decode_bytes`), is capped: by the
``max_bytes`` argument of the readers, else by the ``PERMCODEC_MAX_BYTES`` environment
variable, else by :data:`DEFAULT_MAX_BYTES`. It is checked when a file is opened,
before anything is decoded.
"""

from __future__ import annotations

import os
import re

from ..errors import LimitError

#: Default cap on the memory decoding one file may take (4 GiB: about a billion
#: float32 weights, far beyond networks trained by permutation; raise it for more).
DEFAULT_MAX_BYTES = 4 << 30
#: Largest header the reader parses.
MAX_HEADER = 64 << 20
#: Most tensors one file may hold.
MAX_TENSORS = 1 << 20
#: Bound on the product of a shape's non-zero dimensions (so that even an empty
#: tensor has a shape numpy and torch can hold).
MAX_EXTENT = 1 << 48
ENV_MAX_BYTES = "PERMCODEC_MAX_BYTES"

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from ``"123"``, ``"512M"``, ``"16G"`` or ``"1.5T"`` (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"cannot read {text!r} as a size such as 4096, 512M or 16G")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def max_bytes(value: int | None = None) -> int:
    """The cap in force: ``value`` if given, else ``PERMCODEC_MAX_BYTES``, else the
    default."""
    if value is not None:
        return int(value)
    env = os.environ.get(ENV_MAX_BYTES)
    if not env:
        return DEFAULT_MAX_BYTES
    try:
        return parse_size(env)
    except ValueError as e:
        raise LimitError(f"{ENV_MAX_BYTES}: {e}") from None


def check_claim(claimed: int, value: int | None = None) -> None:
    """Refuse a file whose decoding would take more memory than the cap."""
    cap = max_bytes(value)
    if claimed > cap:
        raise LimitError(
            f"decoding the file's tensors takes {claimed:,} bytes, over the limit of "
            f"{cap:,} bytes; raise it with max_bytes= or {ENV_MAX_BYTES} if you trust "
            "the file"
        )
