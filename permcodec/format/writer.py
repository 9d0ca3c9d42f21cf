"""Writing `.perm` files: tensors in, one atomic file out (numpy arrays; no torch)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any, BinaryIO

import numpy as np

from ..coding.encoder import Encoded, encode_tensor
from ..coding.grid_rans import Grid
from ..core.dtypes import TensorItem
from ..core.plan import Plan, TensorPlan
from ..errors import LossyWarning, PermcodecError
from . import container
from .atomic import atomic_path


def write_file(
    path: str | os.PathLike[str] | BinaryIO,
    tensors: Iterable[TensorItem],
    plan: Plan | None,
    metadata: dict[str, str] | None = None,
    bits: int | None = None,
    originals: dict[str, np.ndarray] | None = None,
    tensor_bits: dict[str, int] | None = None,
    grids: dict[str, Grid] | None = None,
) -> dict[str, Any]:
    """Encode ``tensors`` (seeded ones per ``plan``) into a `.perm` file, atomically
    (``path`` may also be a binary file object, written from where it stands).

    ``bits`` (default: the plan's) stores seeded tensors as rank buckets only; entries
    that are lossy then carry ``rel_error`` (against ``originals[name]`` when given).
    ``tensor_bits`` overrides ``bits`` for the tensors it names. ``grids`` puts the
    tensors it names on those grids (``grid-rans``, lossy, with ``rel_error``).
    Returns the header that was written.
    """
    seeded = plan.tensors if plan is not None else {}
    if bits is None and plan is not None:
        bits = plan.bits
    originals = originals or {}
    tensor_bits = tensor_bits or {}
    grids = grids or {}
    entries: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    offset = 0
    seen = set()
    for name, array, dtype in tensors:
        enc = encode_tensor(
            name,
            array,
            dtype,
            seeded.get(name),
            tensor_bits.get(name, bits),
            originals.get(name),
            grids.get(name),
        )
        entry = entry_of(enc)
        entry["offset"], entry["length"] = offset, len(enc.payload)
        offset += len(enc.payload)
        entries.append(entry)
        payloads.append(enc.payload)
        seen.add(name)
    missing = sorted((set(seeded) | set(grids)) - seen)
    if missing:
        raise PermcodecError(f"plan names tensor(s) the model does not have: {missing[:5]}")
    header = {
        "format": "permcodec",
        "byteorder": "little",
        "seed": plan.seed if plan is not None else None,
        "metadata": {str(k): str(v) for k, v in (metadata or {}).items()},
        "tensors": entries,
    }
    version = max(container.BASE_VERSION, container.version_for(header))
    if hasattr(path, "write"):
        container.write(path, header, payloads, version)
    else:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            container.write(f, header, payloads, version)
    _warn_if_lossy(header)
    return header


def encode_entry(
    name: str,
    array: np.ndarray,
    dtype: str,
    tp: TensorPlan | None,
    bits: int | None = None,
    original: np.ndarray | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Header entry (all but its offset and length) and payload of one tensor (see
    :func:`permcodec.coding.encoder.encode_tensor`)."""
    enc = encode_tensor(name, array, dtype, tp, bits, original)
    return entry_of(enc), enc.payload


def entry_of(enc: Encoded) -> dict[str, Any]:
    """The header entry of an encoded tensor, all but its offset and length."""
    entry = {**enc.fields, "digest": container.section_digest(np.ascontiguousarray(enc.decoded))}
    if enc.rel_error is not None:
        entry["rel_error"] = enc.rel_error
    entry["payload_digest"] = container.section_digest(enc.payload)
    return entry


def _warn_if_lossy(header: dict[str, Any]) -> None:
    """Never silently lossy: warn, naming the tensors a written file does not hold
    exactly."""
    lossy = [(e["name"], e["rel_error"]) for e in header["tensors"] if e.get("rel_error")]
    if lossy:
        worst = max(err for _, err in lossy)
        names = ", ".join(name for name, _ in lossy[:4]) + (" ..." if len(lossy) > 4 else "")
        warnings.warn(
            f"{len(lossy)} tensor(s) stored lossily ({names}); largest relative L2 error "
            f"{worst:.4g}",
            LossyWarning,
            stacklevel=3,
        )
