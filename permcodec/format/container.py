"""The `.perm` container: preamble, msgpack header, payload sections, file checksum.

Layout (all integers little-endian; see docs/FORMAT.md, the contract)::

    0    8  magic  b"\\x89PERM\\r\\n\\x1a"
    8    4  format version (u32)
    12   4  flags (u32, 0)
    16   8  header length H (u64)
    24   H  header (msgpack map)
    24+H 16 BLAKE2b-128 of bytes [0, 24+H) (version 4 on)
    .    .  zero padding to a multiple of 64
    D    .  payload sections, at header-given offsets relative to D
    end-32  BLAKE2b-256 of every byte before it

Every field is checked against the file size and the reader's limits before anything
is allocated from it (:func:`read_header`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
from typing import Any, BinaryIO

import msgpack
import numpy as np

from ..coding.registry import names_in
from ..core.checks import is_int
from ..core.dtypes import STORAGE
from ..core.initializers import KIND_SINCE
from ..errors import FormatError, IntegrityError, UnsupportedVersionError
from .limits import MAX_EXTENT, MAX_HEADER, MAX_TENSORS

MAGIC = b"\x89PERM\r\n\x1a"
FORMAT_VERSION = 7
#: The version writers write unless a file needs a later one (version 4 added the
#: header digest; version 5 only the levels kind, so files without it stay version 4).
BASE_VERSION = 4
PREAMBLE = struct.Struct("<8sIIQ")
ALIGN = 64
TRAILER = 32
#: Length of the header digest that follows the header from version 4 on.
HEADER_DIGEST = 16
#: The codings of each format version (each coding module says which version added
#: it: 2 bucket-rans, 3 row-rans; 4 added the header digest, 5 the levels kind).
CODINGS_OF = {v: names_in(v) for v in range(1, FORMAT_VERSION + 1)}
CODINGS = CODINGS_OF[FORMAT_VERSION]


def version_for(header: dict[str, Any]) -> int:
    """The lowest format version that holds every coding and spec kind of ``header``."""
    used = {t["coding"] for t in header["tensors"]}
    version = min(v for v, codings in CODINGS_OF.items() if used <= set(codings))
    for t in header["tensors"]:
        version = max(version, KIND_SINCE.get(t.get("spec", {}).get("kind"), 1))
    return version


def section_digest(data: bytes | memoryview | np.ndarray) -> bytes:
    """16-byte BLAKE2b digest used for payload sections and decoded tensors (a
    C-contiguous array is hashed in place, as its bytes)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _padding(n: int) -> int:
    return (-n) % ALIGN


def write(
    stream: BinaryIO,
    header: dict[str, Any],
    payloads: list[bytes],
    version: int | None = None,
) -> int:
    """Write a complete container to ``stream``; offsets in ``header`` must match.

    ``version`` (default: the current one) writes that version's layout, as asked and
    unchecked: tests use it to make older or invalid files.
    """
    version = FORMAT_VERSION if version is None else version
    hbytes = msgpack.packb(header, use_bin_type=True)
    h = hashlib.blake2b(digest_size=TRAILER)
    size = 0

    def put(b: bytes) -> None:
        nonlocal size
        h.update(b)
        stream.write(b)
        size += len(b)

    head = PREAMBLE.pack(MAGIC, version, 0, len(hbytes)) + hbytes
    if version >= 4:
        head += section_digest(head)
    put(head)
    put(b"\0" * _padding(len(head)))
    for p in payloads:
        put(p)
    stream.write(h.digest())
    return size + TRAILER


def data_start(header_len: int, version: int = FORMAT_VERSION) -> int:
    """Offset D of the payload area of a file whose header is ``header_len`` bytes."""
    base = PREAMBLE.size + header_len + (HEADER_DIGEST if version >= 4 else 0)
    return base + _padding(base)


def read_header(f: BinaryIO, file_size: int) -> tuple[dict[str, Any], int, int]:
    """Read and validate the preamble and header: (header, data start D, version).

    Checks, before trusting any of it, that every field is in range and fits the file,
    and that the header digest matches (version 4 on).
    """
    f.seek(0)
    pre = f.read(PREAMBLE.size)
    if len(pre) < PREAMBLE.size:
        raise FormatError(f"not a .perm file: {file_size} bytes is too short")
    magic, version, flags, hlen = PREAMBLE.unpack(pre)
    if magic != MAGIC:
        raise FormatError("not a .perm file: bad magic bytes")
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"format version {version} was written by a newer permcodec; this one reads "
            f"up to {FORMAT_VERSION}"
        )
    if version < 1 or flags != 0:
        raise FormatError(f"bad preamble: version {version}, flags {flags}")
    if hlen > MAX_HEADER:
        raise FormatError(f"header length {hlen} exceeds the limit of {MAX_HEADER} bytes")
    start = data_start(hlen, version)
    if start + TRAILER > file_size:
        raise FormatError(
            f"file truncated at byte {file_size}: its {hlen}-byte header needs at least "
            f"{start + TRAILER} bytes"
        )
    raw = f.read(hlen)
    if version >= 4 and f.read(HEADER_DIGEST) != section_digest(pre + raw):
        raise IntegrityError("header checksum mismatch: the tensor table is damaged")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise FormatError(f"header is not valid msgpack: {e}") from None
    _validate(header, start, file_size, version)
    return header, start, version


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise FormatError(f"bad header: {msg}")


def _validate(header: Any, start: int, file_size: int, version: int) -> None:
    """Check types, ranges and offsets of the header before anything trusts them."""
    _check(isinstance(header, dict), "not a map")
    _check(header.get("byteorder") == "little", "byteorder must be 'little'")
    tensors = header.get("tensors")
    _check(isinstance(tensors, list), "'tensors' must be a list")
    _check(len(tensors) <= MAX_TENSORS, f"{len(tensors)} tensors exceed the limit {MAX_TENSORS}")
    data_len = file_size - TRAILER - start
    end = 0
    names = set()
    for i, t in enumerate(tensors):
        _check(isinstance(t, dict), f"tensor {i} is not a map")
        name = t.get("name")
        _check(isinstance(name, str) and name not in names, f"tensor {i} name invalid or repeated")
        names.add(name)
        shape = t.get("shape")
        _check(
            isinstance(shape, list)
            and len(shape) <= 8
            and all(is_int(d) and 0 <= d < 2**40 for d in shape)
            and math.prod(d for d in shape if d) < MAX_EXTENT,
            f"tensor {name!r} shape {shape!r:.80} invalid",
        )
        _check(
            t.get("coding") in CODINGS_OF[version],
            f"tensor {name!r} coding {t.get('coding')!r} unknown in format version {version}",
        )
        spec = t.get("spec")
        kind = spec.get("kind") if isinstance(spec, dict) else None
        since = KIND_SINCE.get(kind, 1) if isinstance(kind, str) else 1
        _check(
            version >= since,
            f"tensor {name!r}: the {kind} kind needs format version {since}",
        )
        dtype = t.get("dtype")
        _check(isinstance(dtype, str) and dtype in STORAGE, f"tensor {name!r} dtype {dtype!r:.40}")
        off, length = t.get("offset"), t.get("length")
        _check(is_int(off) and is_int(length), f"tensor {name!r} offset or length invalid")
        _check(
            off >= end and length >= 0 and off + length <= data_len,
            f"tensor {name!r} payload [{off}, {off + length}) is out of bounds or overlaps "
            f"(payload area: {data_len} bytes; a truncated file?)",
        )
        end = off + length
        for k in ("digest", "payload_digest"):
            _check(isinstance(t.get(k), bytes) and len(t[k]) == 16, f"tensor {name!r} {k} invalid")


def verify_file_checksum(f: BinaryIO, file_size: int) -> None:
    """Hash the whole file and compare with its trailer."""
    f.seek(0)
    h = hashlib.blake2b(digest_size=TRAILER)
    left = file_size - TRAILER
    while left > 0:
        chunk = f.read(min(left, 1 << 20))
        if not chunk:
            raise FormatError(f"file truncated at byte {file_size - left}")
        h.update(chunk)
        left -= len(chunk)
    if f.read(TRAILER) != h.digest():
        raise IntegrityError("whole-file checksum mismatch: the file is damaged")


def file_size(f: BinaryIO) -> int:
    """Size of an open binary file (a real file, a BytesIO or any seekable object)."""
    if isinstance(f, io.BytesIO):
        return len(f.getbuffer())
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        return f.seek(0, io.SEEK_END)
