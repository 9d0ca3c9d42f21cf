"""The `.perm` container: preamble, msgpack header, payload sections, file checksum.

Layout (all integers little-endian; see docs/FORMAT.md, the contract)::

    0   8  magic  b"\\x89PERM\\r\\n\\x1a"
    8   4  format version (u32)
    12  4  flags (u32, 0)
    16  8  header length H (u64)
    24  H  header (msgpack map)
    .   .  zero padding to a multiple of 64
    D   .  payload sections, at header-given offsets relative to D
    end-32 BLAKE2b-256 of every byte before it
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from typing import Any, BinaryIO

import msgpack
import numpy as np

from .errors import FormatError, IntegrityError, UnsupportedVersionError
from .validate import is_int

MAGIC = b"\x89PERM\r\n\x1a"
FORMAT_VERSION = 3
PREAMBLE = struct.Struct("<8sIIQ")
ALIGN = 64
TRAILER = 32
MAX_HEADER = 64 * 1024 * 1024
#: The codings of each format version (version 2 added bucket-rans, 3 row-rans).
CODINGS_OF = {
    1: ("perm-rans", "raw-zstd", "raw"),
    2: ("perm-rans", "bucket-rans", "raw-zstd", "raw"),
    3: ("perm-rans", "row-rans", "bucket-rans", "raw-zstd", "raw"),
}
CODINGS = CODINGS_OF[FORMAT_VERSION]


def version_for(header: dict[str, Any]) -> int:
    """The lowest format version that holds every coding and spec kind of ``header``."""
    used = {t["coding"] for t in header["tensors"]}
    version = min(v for v, codings in CODINGS_OF.items() if used <= set(codings))
    if any(t.get("spec", {}).get("kind") == "quantile" for t in header["tensors"]):
        version = max(version, 2)
    return version


def section_digest(data: bytes | memoryview | np.ndarray) -> bytes:
    """16-byte BLAKE2b digest used for payload sections and decoded tensors (a
    C-contiguous array is hashed in place, as its bytes)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _padding(n: int) -> int:
    return (-n) % ALIGN


def write(stream: BinaryIO, header: dict[str, Any], payloads: list[bytes]) -> int:
    """Write a complete container to ``stream``; offsets in ``header`` must match."""
    hbytes = msgpack.packb(header, use_bin_type=True)
    h = hashlib.blake2b(digest_size=TRAILER)
    size = 0

    def put(b: bytes) -> None:
        nonlocal size
        h.update(b)
        stream.write(b)
        size += len(b)

    put(PREAMBLE.pack(MAGIC, version_for(header), 0, len(hbytes)))
    put(hbytes)
    put(b"\0" * _padding(PREAMBLE.size + len(hbytes)))
    for p in payloads:
        put(p)
    stream.write(h.digest())
    return size + TRAILER


def data_start(header_len: int) -> int:
    base = PREAMBLE.size + header_len
    return base + _padding(base)


def read_header(f: BinaryIO, file_size: int) -> tuple[dict[str, Any], int, int]:
    """Read and validate the preamble and header; returns (header, data start offset)."""
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
    if hlen > MAX_HEADER or PREAMBLE.size + hlen + TRAILER > file_size:
        raise FormatError(f"header length {hlen} does not fit a file of {file_size} bytes")
    raw = f.read(hlen)
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise FormatError(f"header is not valid msgpack: {e}") from None
    start = data_start(hlen)
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
    data_len = file_size - TRAILER - start
    _check(data_len >= 0, "payload area is negative")
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
            and all(is_int(d) and 0 <= d < 2**40 for d in shape)
            and len(shape) <= 8,
            f"tensor {name!r} shape invalid",
        )
        _check(
            t.get("coding") in CODINGS_OF[version],
            f"tensor {name!r} coding {t.get('coding')!r} unknown in format version {version}",
        )
        spec = t.get("spec")
        _check(
            version >= 2 or not (isinstance(spec, dict) and spec.get("kind") == "quantile"),
            f"tensor {name!r}: the quantile kind needs format version 2",
        )
        _check(isinstance(t.get("dtype"), str), f"tensor {name!r} dtype invalid")
        off, length = t.get("offset"), t.get("length")
        _check(
            is_int(off)
            and is_int(length)
            and off >= end
            and length >= 0
            and off + length <= data_len,
            f"tensor {name!r} payload out of bounds or overlapping",
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
    if isinstance(f, io.BytesIO):
        return len(f.getbuffer())
    return os.fstat(f.fileno()).st_size
