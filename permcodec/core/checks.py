"""Small type checks shared by the readers of headers, specs and plans."""

from __future__ import annotations

from typing import Any


def is_int(x: Any) -> bool:
    """True for Python/msgpack integers, false for bools (which are ints in Python)."""
    return isinstance(x, int) and not isinstance(x, bool)
