"""``raw`` and ``raw-zstd`` (FORMAT 4.1, 4.2): a tensor's bytes, plain or in one zstd frame.

Everything that is not seeded (biases, norm layers, buffers, integer tensors) is stored
this way, exactly.
"""

from __future__ import annotations

import numpy as np
import zstandard

from ..core.dtypes import storage_dtype
from ..errors import FormatError, IntegrityError
from .base import Coding, Params

ZSTD_LEVEL = 10


class Raw(Coding):
    """The tensor's bytes, C order, little-endian."""

    name = "raw"
    since = 1

    def decode(self, params: Params, payload: bytes) -> np.ndarray:
        meta = params.meta
        sdt = storage_dtype(meta.dtype)
        if len(payload) != meta.numel * sdt.itemsize:
            raise FormatError(
                f"tensor {meta.name!r}: raw payload holds {len(payload)} bytes, "
                f"expected {meta.numel * sdt.itemsize}"
            )
        return _checked(np.frombuffer(payload, dtype=sdt).reshape(meta.shape).copy(), meta.name)


class RawZstd(Coding):
    """The tensor's bytes in one zstd frame that declares their size."""

    name = "raw-zstd"
    since = 1

    def decode(self, params: Params, payload: bytes) -> np.ndarray:
        meta = params.meta
        sdt = storage_dtype(meta.dtype)
        raw = _unzstd(payload, meta.numel * sdt.itemsize, meta.name)
        return _checked(np.frombuffer(raw, dtype=sdt).reshape(meta.shape).copy(), meta.name)


def encode(array: np.ndarray) -> tuple[str, bytes]:
    """(coding name, payload) of a tensor stored exactly: zstd unless it would grow."""
    raw = array.tobytes()
    payload = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    if len(payload) >= len(raw):
        return Raw.name, raw
    return RawZstd.name, payload


def _checked(out: np.ndarray, name: str) -> np.ndarray:
    if out.dtype == np.bool_ and out.view(np.uint8).max(initial=0) > 1:
        raise FormatError(f"tensor {name!r}: bool values other than 0 and 1")
    return out


def _unzstd(payload: bytes, expected: int, name: str) -> bytes:
    """Decompress exactly one zstd frame that declares exactly ``expected`` bytes."""
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as e:
        raise FormatError(f"tensor {name!r}: not a zstd frame ({e})") from None
    if declared != expected:
        raise FormatError(
            f"tensor {name!r}: zstd frame declares {declared} bytes, the tensor needs {expected}"
        )
    dobj = zstandard.ZstdDecompressor().decompressobj()
    try:
        raw = dobj.decompress(payload)
    except zstandard.ZstdError as e:
        raise IntegrityError(f"tensor {name!r}: zstd payload is corrupt ({e})", name) from None
    if len(raw) != expected or dobj.unused_data or not dobj.eof:
        raise FormatError(
            f"tensor {name!r}: zstd payload does not hold exactly one frame of {expected} bytes"
        )
    return raw
