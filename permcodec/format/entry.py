"""Tensor entries of a `.perm` header, parsed once, when the file is opened.

:func:`parse_entry` turns a header map that passed the container's checks
(:func:`permcodec.format.container.read_header`) into an :class:`Entry`: the tensor, its
coding (from :mod:`permcodec.coding.registry`) with that coding's validated fields, the
payload's place and digests. Readers then trust these records, not the map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..coding import registry
from ..coding.base import Coding, Meta, Params, SeededParams
from ..core.dtypes import STORAGE


@dataclass(frozen=True)
class Entry:
    """One tensor of a file, as its header describes it."""

    meta: Meta
    codec: Coding
    params: Params
    offset: int
    length: int
    digest: bytes
    payload_digest: bytes
    rel_error: float | None
    fields: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def coding(self) -> str:
        """The coding's name (``"row-rans"``, ``"raw-zstd"``, ...)."""
        return self.codec.name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.meta.shape

    @property
    def dtype(self) -> str:
        return self.meta.dtype

    @property
    def numel(self) -> int:
        return self.meta.numel

    @property
    def seeded(self) -> SeededParams | None:
        """The seed and lanes of a seeded tensor, else None."""
        return self.params if isinstance(self.params, SeededParams) else None

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor once decoded."""
        return self.numel * STORAGE[self.dtype].itemsize


def parse_entry(fields: Mapping[str, Any]) -> Entry:
    """The typed entry of a header map that passed the container's checks; raises
    :class:`permcodec.FormatError` where a coding field is out of range."""
    meta = Meta(fields["name"], tuple(int(d) for d in fields["shape"]), fields["dtype"])
    coding = registry.get(fields["coding"])
    rel = fields.get("rel_error")
    ok = isinstance(rel, (int, float)) and not isinstance(rel, bool)
    return Entry(
        meta,
        coding,
        coding.parse(fields, meta),
        fields["offset"],
        fields["length"],
        fields["digest"],
        fields["payload_digest"],
        float(rel) if ok else None,
        fields,
    )


def decode_bytes(entries: list[Entry]) -> int:
    """Memory that decoding every tensor of ``entries`` may take: the decoded tensors,
    plus the largest working set of one decode (:meth:`Coding.working_bytes`)."""
    work = [e.codec.working_bytes(e.params) for e in entries]
    return sum(e.nbytes for e in entries) + max(work, default=0)
