"""Tensor <-> payload: seeded tensors as coded arrangements, the rest as zstd bytes.

Works one tensor at a time on numpy arrays in the storage dtypes of
:mod:`permcodec.dtypes`, so memory stays near one tensor's working set.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import zstandard

from . import arrangement, rans
from .container import section_digest
from .dtypes import FLOAT_DTYPES, c_contiguous, from_float32, order_keys, storage_dtype
from .errors import FormatError, IntegrityError, PlanError
from .initializers import check_resolved, fans, generate, row_shape
from .plan import TensorPlan
from .validate import is_int

ZSTD_LEVEL = 10
#: Longest row the 31-bit coder can model.
MAX_ROW = rans.PROB_ONE


def init_rows(
    spec: dict[str, Any], key: tuple[int, int], shape: tuple[int, ...], dtype: str
) -> np.ndarray:
    """The seeded initial values of a tensor as (rows, m), in the storage dtype."""
    return from_float32(generate(spec, key, shape), dtype)


def _check_plan_fits(name: str, tp: TensorPlan, shape: tuple[int, ...], dtype: str) -> None:
    if dtype not in FLOAT_DTYPES:
        raise PlanError(f"tensor {name!r} has dtype {dtype}; only {FLOAT_DTYPES} can be seeded")
    check_resolved(tp.spec)
    if row_shape(shape, tp.spec["granularity"])[1] > MAX_ROW:
        raise PlanError(f"tensor {name!r} has rows longer than {MAX_ROW} values")
    if (tp.spec.get("fan_in"), tp.spec.get("fan_out")) != fans(shape):
        raise PlanError(
            f"tensor {name!r} has shape {list(shape)}, which does not match its "
            "plan (the fans differ)"
        )


def encode_tensor(
    name: str, array: np.ndarray, dtype: str, tp: TensorPlan | None
) -> tuple[dict[str, Any], bytes]:
    """Header entry (without offset) and payload bytes of one tensor."""
    array = c_contiguous(array, storage_dtype(dtype))
    shape = tuple(int(d) for d in array.shape)
    entry: dict[str, Any] = {
        "name": name,
        "shape": list(shape),
        "dtype": dtype,
        "digest": section_digest(array.tobytes()),
    }
    if tp is None:
        raw = array.tobytes()
        payload = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
        entry["coding"] = "raw-zstd"
        if len(payload) >= len(raw):
            entry["coding"], payload = "raw", raw
    else:
        _check_plan_fits(name, tp, shape, dtype)
        rows, m = row_shape(shape, tp.spec["granularity"])
        init = init_rows(tp.spec, tp.key, shape, dtype)
        rc = arrangement.row_classes(init, order_keys(init, dtype))
        cls = arrangement.classes_of(order_keys(array.reshape(rows, m), dtype), rc, name)
        bound = arrangement.bound_bits(rc.counts)
        lanes = rans.choose_lanes(rows, bound)
        states, words = rans.encode(cls, rc.counts, lanes)
        payload = states.astype("<u8").tobytes() + words.astype("<u4").tobytes()
        entry.update(
            coding="perm-rans", spec=dict(tp.spec), key=list(tp.key), lanes=lanes, bound_bits=bound
        )
    entry["payload_digest"] = section_digest(payload)
    return entry, payload


def decode_tensor(entry: dict[str, Any], payload: bytes) -> np.ndarray:
    """Rebuild one tensor from its header entry and payload; checks both digests."""
    name = entry["name"]
    if section_digest(payload) != entry["payload_digest"]:
        raise IntegrityError(f"checksum mismatch in the payload of tensor {name!r}", name)
    shape = tuple(entry["shape"])
    dtype = entry["dtype"]
    sdt = storage_dtype(dtype)
    numel = math.prod(shape)
    if entry["coding"] == "raw":
        if len(payload) != numel * sdt.itemsize:
            raise FormatError(
                f"tensor {name!r}: raw payload holds {len(payload)} bytes, "
                f"expected {numel * sdt.itemsize}"
            )
        out = np.frombuffer(payload, dtype=sdt).reshape(shape).copy()
    elif entry["coding"] == "raw-zstd":
        out = np.frombuffer(_unzstd(payload, numel * sdt.itemsize, name), dtype=sdt)
        out = out.reshape(shape).copy()
    else:
        out = _decode_perm(entry, payload, shape, dtype)
    if dtype == "bool" and out.view(np.uint8).max(initial=0) > 1:
        raise FormatError(f"tensor {name!r}: bool values other than 0 and 1")
    if section_digest(out.tobytes()) != entry["digest"]:
        raise IntegrityError(f"digest mismatch in decoded tensor {name!r}", name)
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


def _decode_perm(
    entry: dict[str, Any], payload: bytes, shape: tuple[int, ...], dtype: str
) -> np.ndarray:
    name = entry["name"]
    if dtype not in FLOAT_DTYPES:
        raise FormatError(f"tensor {name!r}: seeded tensors must be floating point, not {dtype}")
    spec, lanes = entry.get("spec"), entry.get("lanes")
    key = entry.get("key")
    if not (
        isinstance(spec, dict)
        and is_int(lanes)
        and lanes >= 1
        and isinstance(key, list)
        and len(key) == 2
        and all(is_int(k) and 0 <= k < 2**32 for k in key)
    ):
        raise FormatError(f"tensor {name!r}: malformed perm-rans entry")
    if 8 * lanes > len(payload) or (len(payload) - 8 * lanes) % 4:
        raise FormatError(
            f"tensor {name!r}: payload length {len(payload)} does not fit {lanes} lanes"
        )
    try:
        check_resolved(spec, shape)
    except PlanError as e:
        raise FormatError(f"tensor {name!r}: bad initializer spec: {e}") from None
    rows, m = row_shape(shape, spec["granularity"])
    if m > MAX_ROW:
        raise FormatError(f"tensor {name!r}: rows of {m} values exceed the limit {MAX_ROW}")
    init = init_rows(spec, (key[0], key[1]), shape, dtype)
    if lanes > max(rows, 1):
        raise FormatError(f"tensor {name!r}: {lanes} lanes for {rows} rows")
    rc = arrangement.row_classes(init, order_keys(init, dtype))
    states = np.frombuffer(payload, dtype="<u8", count=lanes)
    words = np.frombuffer(payload, dtype="<u4", offset=8 * lanes)
    cls = rans.decode(states, words, rc.counts, m, name)
    return arrangement.rebuild(cls, rc).reshape(shape)
