"""The codings a `.perm` file may use, by name; adding a coding is one module and one
line here (plus its section in docs/FORMAT.md)."""

from __future__ import annotations

from .base import Coding
from .bucket_rans import BucketRans
from .grid_rans import GridRans
from .level_rans import LevelRans
from .perm_rans import PermRans
from .raw import Raw, RawZstd
from .row_rans import RowRans

#: Every coding, in the order FORMAT.md lists them.
CODINGS: dict[str, Coding] = {
    c.name: c
    for c in (PermRans(), RowRans(), BucketRans(), GridRans(), LevelRans(), RawZstd(), Raw())
}


def get(name: str) -> Coding:
    """The coding called ``name`` (KeyError if there is none)."""
    return CODINGS[name]


def names_in(version: int) -> tuple[str, ...]:
    """The codings a file of format ``version`` may use."""
    return tuple(name for name, c in CODINGS.items() if c.since <= version)


def seeded_names() -> tuple[str, ...]:
    """The codings that store arrangements of a seeded init."""
    return tuple(name for name, c in CODINGS.items() if c.seeded)
