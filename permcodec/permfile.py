"""Writing and lazily reading `.perm` files, on numpy arrays (no torch needed)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import numpy as np

from . import container
from .atomic import atomic_path
from .codec import SEEDED_CODINGS, check_entry, decode_bytes, decode_tensor, encode_tensor
from .errors import FormatError, IntegrityError, LimitError, LossyWarning, PermcodecError
from .limits import check_claim
from .plan import Plan

#: (name, array in its storage dtype, dtype name)
TensorItem = tuple[str, np.ndarray, str]


def write_file(
    path: str | os.PathLike[str],
    tensors: Iterable[TensorItem],
    plan: Plan | None,
    metadata: dict[str, str] | None = None,
    bits: int | None = None,
    originals: dict[str, np.ndarray] | None = None,
    tensor_bits: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Encode ``tensors`` (seeded ones per ``plan``) into a `.perm` file, atomically.

    ``bits`` (default: the plan's) stores seeded tensors as rank buckets only; entries
    that are lossy then carry ``rel_error`` (against ``originals[name]`` when given).
    ``tensor_bits`` overrides ``bits`` for the tensors it names.
    Returns the header that was written.
    """
    seeded = plan.tensors if plan is not None else {}
    if bits is None and plan is not None:
        bits = plan.bits
    originals = originals or {}
    tensor_bits = tensor_bits or {}
    entries: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    offset = 0
    seen = set()
    for name, array, dtype in tensors:
        entry, payload = encode_tensor(
            name, array, dtype, seeded.get(name), tensor_bits.get(name, bits), originals.get(name)
        )
        entry["offset"], entry["length"] = offset, len(payload)
        offset += len(payload)
        entries.append(entry)
        payloads.append(payload)
        seen.add(name)
    missing = sorted(set(seeded) - seen)
    if missing:
        raise PermcodecError(f"plan names tensor(s) the model does not have: {missing[:5]}")
    header = {
        "format": "permcodec",
        "byteorder": "little",
        "seed": plan.seed if plan is not None else None,
        "metadata": {str(k): str(v) for k, v in (metadata or {}).items()},
        "tensors": entries,
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        container.write(f, header, payloads)
    _warn_if_lossy(header)
    return header


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


class PermFile:
    """A `.perm` file opened for lazy, one-tensor-at-a-time reading.

    ``keys()`` lists tensors, ``tensor(name)`` decodes one (verifying its checksums),
    ``info()`` summarizes sizes against the bound. Use as a context manager.

    Opening checks the header (its digest, every field, the limits) and, with
    ``strict`` (the default), the whole-file checksum, so a damaged file is refused at
    once. ``strict=False`` skips the whole-file check to read the intact tensors of a
    damaged file: each tensor is still verified by its own digests, and a damaged one
    raises :class:`IntegrityError` naming it. ``max_bytes`` caps the memory decoding the
    file may claim (:mod:`permcodec.limits`).
    """

    def __init__(
        self, path: str | os.PathLike[str], strict: bool = True, max_bytes: int | None = None
    ) -> None:
        self.path = os.fspath(path)
        try:
            self._f: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed in close())
        except OSError as e:
            raise FileNotFoundError(f"cannot open {self.path}: {e.strerror}") from None
        try:
            self._size = container.file_size(self._f)
            self.header, self._start, self.version = container.read_header(self._f, self._size)
            for entry in self.header["tensors"]:
                check_entry(entry)
            check_claim(decode_bytes(self.header["tensors"]), max_bytes)
            if strict:
                self._verify_at_open()
        except BaseException:
            self._f.close()
            raise
        self._entries = {t["name"]: t for t in self.header["tensors"]}

    def __enter__(self) -> PermFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def keys(self) -> list[str]:
        return list(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def metadata(self) -> dict[str, str]:
        meta = self.header.get("metadata")
        return dict(meta) if isinstance(meta, dict) else {}

    def entry(self, name: str) -> dict[str, Any]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.path}") from None

    def payload(self, name: str) -> bytes:
        """The coded bytes of one tensor, as stored (checked by :func:`decode_tensor`)."""
        e = self.entry(name)
        self._f.seek(self._start + e["offset"])
        payload = self._f.read(e["length"])
        if len(payload) != e["length"]:
            raise FormatError(f"file truncated inside tensor {name!r}")
        return payload

    def tensor(self, name: str) -> np.ndarray:
        """Decode one tensor, in its storage dtype (bfloat16 as uint16 bit patterns)."""
        entry = self.entry(name)
        try:
            return decode_tensor(entry, self.payload(name))
        except MemoryError:
            need = container.claimed_bytes([entry])
            raise LimitError(f"tensor {name!r} needs {need:,} bytes: not enough memory") from None

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in self._entries:
            yield name, self.tensor(name)

    def verify_checksum(self) -> None:
        """Compare the whole-file BLAKE2b-256 with the trailer."""
        container.verify_file_checksum(self._f, self._size)

    def _verify_at_open(self) -> None:
        try:
            self.verify_checksum()
        except IntegrityError as e:
            raise IntegrityError(
                f"{e}; `permcodec verify` names the damaged tensors, and "
                "permcodec.open(path, strict=False) reads the intact ones"
            ) from None

    def verify(self) -> list[tuple[str, str]]:
        """Decode every tensor; returns (name, problem) for each damaged one, and
        ("<file>", problem) when the whole-file checksum fails outside them."""
        problems = []
        for name in self._entries:
            try:
                self.tensor(name)
            except FormatError as e:
                problems.append((name, str(e)))
        try:
            self.verify_checksum()
        except IntegrityError as e:
            where = "" if problems else " (outside every tensor: padding or trailer)"
            problems.append(("<file>", f"{e}{where}"))
        return problems

    def info(self) -> dict[str, Any]:
        """Per-tensor and total sizes, bits per weight, and the seeded tensors' bound.

        Totals split the file into seeded payloads (against their bound B), other
        payloads (stored exactly) and the container itself (preamble, header, trailer).
        """
        rows = []
        payload_bits = seeded_bits = seeded_bound = lossy_bits = 0.0
        numel_all = 0
        for e in self.header["tensors"]:
            numel = int(np.prod(e["shape"])) if e["shape"] else 1
            bits = 8 * e["length"]
            row = {
                "name": e["name"],
                "shape": e["shape"],
                "dtype": e["dtype"],
                "coding": e["coding"],
                "numel": numel,
                "bytes": e["length"],
                "bits_per_weight": bits / numel if numel else 0.0,
            }
            if e["coding"] in SEEDED_CODINGS:
                row["spec"] = e.get("spec", {})
                row["lanes"] = e.get("lanes")
                if e["coding"] == "bucket-rans":
                    row["bits"] = e.get("bits")
                    row["exact"] = e.get("exact")
                if "rel_error" in e:
                    row["rel_error"] = e["rel_error"]
                b = e.get("bound_bits")
                lossless = e["coding"] in ("perm-rans", "row-rans") or e.get("exact") is True
                if lossless and isinstance(b, (int, float)) and not isinstance(b, bool) and b:
                    row["bound_bits_per_weight"] = b / numel if numel else 0.0
                    row["ratio_to_bound"] = bits / b
                    seeded_bits += bits
                    seeded_bound += b
                else:
                    lossy_bits += bits
            rows.append(row)
            payload_bits += bits
            numel_all += numel
        file_bits = 8 * self._size
        return {
            "path": self.path,
            "format_version": self.version,
            "seed": self.header.get("seed"),
            "metadata": self.metadata,
            "tensors": rows,
            "numel": numel_all,
            "file_bytes": self._size,
            "bits_per_weight": file_bits / numel_all if numel_all else 0.0,
            "ratio_vs_float32": 32 * numel_all / file_bits,
            "ratio_vs_float16": 16 * numel_all / file_bits,
            "seeded_bits": seeded_bits,
            "seeded_bound_bits": seeded_bound,
            "seeded_ratio_to_bound": seeded_bits / seeded_bound if seeded_bound else None,
            "lossy_bits": lossy_bits,
            "other_payload_bits": payload_bits - seeded_bits - lossy_bits,
            "container_bits": file_bits - payload_bits,
        }


def open_file(
    path: str | os.PathLike[str], strict: bool = True, max_bytes: int | None = None
) -> PermFile:
    """Open a `.perm` file for lazy reading (``permcodec.open``); see :class:`PermFile`."""
    return PermFile(path, strict=strict, max_bytes=max_bytes)
