"""What every coding shares: the tensor it codes, its seed fields, and the interface.

A coding turns the payload bytes of one tensor back into its array. Each lives in a
module of its own (:mod:`permcodec.coding.registry` lists them) as a :class:`Coding`:
it parses and validates its header fields once, when a file is opened, into a typed
record; it says how much working memory a decode takes; and it decodes. Encoders are
plain functions of each module, chosen by :mod:`permcodec.coding.encoder`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.checks import is_int
from ..core.dtypes import FLOAT_DTYPES
from ..core.initializers import check_resolved, row_shape
from ..errors import FormatError, PlanError
from .rans import PROB_ONE

#: Longest row the 31-bit coder can model.
MAX_ROW = PROB_ONE


@dataclass(frozen=True)
class Meta:
    """The tensor an entry describes."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Seed:
    """The initialization of a seeded tensor: its spec, stream key and row shape."""

    spec: dict[str, Any]
    key: tuple[int, int]
    rows: int
    m: int


@dataclass(frozen=True)
class Params:
    """The parsed header fields of one entry; each coding extends it."""

    meta: Meta


@dataclass(frozen=True)
class SeededParams(Params):
    """Fields every seeded coding has: the seed and the lane count of its stream."""

    seed: Seed
    lanes: int
    bound_bits: float | None


class Coding:
    """A payload coding: parse its fields, bound a decode's memory, decode."""

    #: The name in the header's ``coding`` field.
    name: ClassVar[str]
    #: First format version that holds the coding.
    since: ClassVar[int]
    #: Whether it stores an arrangement of a seeded init (then ``seed`` fields exist).
    seeded: ClassVar[bool] = False

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> Params:
        """Validate the entry's coding fields; raise :class:`FormatError` if bad."""
        return Params(meta)

    def largest_run(self, params: Params) -> int:
        """Values the decoder works on at once, beside the output (0: none)."""
        return 0

    def working_bytes(self, params: Params) -> int:
        """Memory a decode takes beside the output (the working set of its largest run
        of rows, unless the coding says otherwise)."""
        from .runs import RUN_BYTES_PER_VALUE

        return RUN_BYTES_PER_VALUE * self.largest_run(params)

    def lossless(self, params: Params) -> bool:
        """Whether the payload holds the tensor exactly (else only its rank buckets)."""
        return True

    def describe(self, params: Params) -> dict[str, Any]:
        """Coding-specific facts for :meth:`permcodec.PermFile.info`."""
        return {}

    def decode(self, params: Params, payload: bytes) -> np.ndarray:
        """The tensor, in its storage dtype and shape."""
        raise NotImplementedError


class SeededCoding(Coding):
    """A coding of arrangements of a seeded init: ``spec``, ``key`` and ``lanes``."""

    seeded = True

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> SeededParams:
        return SeededParams(meta, *parse_seeded(fields, meta))

    def describe(self, params: SeededParams) -> dict[str, Any]:
        return {"lanes": params.lanes}


def parse_seed(fields: Mapping[str, Any], meta: Meta) -> Seed:
    """Validate the seed fields (``spec``, ``key``) of a seeded entry."""
    name = meta.name
    if meta.dtype not in FLOAT_DTYPES:
        raise FormatError(
            f"tensor {name!r}: seeded tensors must be floating point, not {meta.dtype}"
        )
    spec, key = fields.get("spec"), fields.get("key")
    if not (
        isinstance(spec, dict)
        and isinstance(key, list)
        and len(key) == 2
        and all(is_int(k) and 0 <= k < 2**32 for k in key)
    ):
        raise FormatError(f"tensor {name!r}: malformed {fields.get('coding')} entry")
    try:
        check_resolved(spec, meta.shape)
    except PlanError as e:
        raise FormatError(f"tensor {name!r}: bad initializer spec: {e}") from None
    rows, m = row_shape(meta.shape, spec["granularity"])
    if m > MAX_ROW:
        raise FormatError(f"tensor {name!r}: rows of {m} values exceed the limit {MAX_ROW}")
    return Seed(spec, (key[0], key[1]), rows, m)


def parse_lanes(value: Any, name: str, rows: int) -> int:
    """A lane count: an int in 1..max(rows, 1)."""
    if not is_int(value) or not 1 <= value <= max(rows, 1):
        raise FormatError(f"tensor {name!r}: {value!r} lanes for {rows} rows")
    return int(value)


def parse_seeded(fields: Mapping[str, Any], meta: Meta) -> tuple[Seed, int, float | None]:
    """(seed, lanes, bound_bits) of a seeded entry."""
    seed = parse_seed(fields, meta)
    lanes = parse_lanes(fields.get("lanes"), meta.name, seed.rows)
    bound = fields.get("bound_bits")
    ok = isinstance(bound, (int, float)) and not isinstance(bound, bool)
    return seed, lanes, float(bound) if ok else None


def rans_bytes(states: np.ndarray, *u32_arrays: np.ndarray) -> bytes:
    """Lane states as little-endian u64, then each array as little-endian u32."""
    return states.astype("<u8").tobytes() + b"".join(a.astype("<u4").tobytes() for a in u32_arrays)


def split_rans(
    name: str, payload: bytes, offset: int, lanes: int, n_words: Any, rows: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(states, words, end offset) of one rANS stream at ``offset``; ``n_words`` None
    means the stream runs to the end of the payload."""
    parse_lanes(lanes, name, rows)
    rest = len(payload) - offset - 8 * lanes
    if n_words is None:
        if rest < 0 or rest % 4:
            raise FormatError(
                f"tensor {name!r}: payload length {len(payload)} does not fit {lanes} lanes"
            )
        n_words = rest // 4
    elif not is_int(n_words) or n_words < 0 or 4 * n_words > rest:
        raise FormatError(f"tensor {name!r}: payload too short for {n_words!r} words")
    states = np.frombuffer(payload, dtype="<u8", count=lanes, offset=offset)
    words = np.frombuffer(payload, dtype="<u4", count=n_words, offset=offset + 8 * lanes)
    return states, words, offset + 8 * lanes + 4 * n_words
