"""Reading `.perm` files lazily, one tensor at a time, on numpy arrays (no torch)."""

from __future__ import annotations

import io
import json
import os
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np

from ..coding import runs
from ..core.dtypes import FLOAT_DTYPES
from ..core.plan import Plan, TensorPlan
from ..errors import FormatError, IntegrityError, LimitError
from . import container
from .entry import Entry, decode_bytes, parse_entry
from .limits import check_claim

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
#: Metadata key of the tied names a writer stored once (JSON: alias -> stored name).
ALIASES_KEY = "permcodec_aliases"


class Metadata(dict):
    """The file's metadata: a dict, also callable as ``metadata()`` (as in safetensors'
    ``safe_open``)."""

    def __call__(self) -> dict[str, str]:
        return dict(self)


class PermFile:
    """A `.perm` file opened for lazy, one-tensor-at-a-time reading, as numpy arrays.

    ``keys()`` lists tensors, ``get_tensor(name)`` (or ``tensor(name)``) decodes one
    (verifying its checksums), ``metadata()`` and ``info()`` describe the file. Use as a
    context manager. The source is a path, the file's bytes, or a binary file object
    (read from its start; left open). bfloat16 tensors come back as
    ``ml_dtypes.bfloat16`` arrays where ml_dtypes is installed, else as uint16 bits;
    ``storage(name)`` always gives the storage form (uint16 bits).

    Opening checks the header (its digest, every field, the limits) and, with
    ``strict`` (the default), the whole-file checksum, so a damaged file is refused at
    once. ``strict=False`` skips the whole-file check to read the intact tensors of a
    damaged file: each tensor is still verified by its own digests, and a damaged one
    raises :class:`IntegrityError` naming it. ``max_bytes`` caps the memory decoding the
    file may claim (:mod:`permcodec.format.limits`).
    """

    def __init__(self, path: Source, strict: bool = True, max_bytes: int | None = None) -> None:
        self._owned = True
        if isinstance(path, (bytes, bytearray, memoryview)):
            self.path = "<bytes>"
            self._f: BinaryIO = io.BytesIO(path)
        elif hasattr(path, "read") and hasattr(path, "seek"):
            self.path, self._f, self._owned = str(getattr(path, "name", "<file>")), path, False
        else:
            self.path = os.fspath(path)
            try:
                self._f = open(self.path, "rb")  # noqa: SIM115 (closed in close())
            except OSError as e:
                raise FileNotFoundError(f"cannot open {self.path}: {e.strerror}") from None
        try:
            self._size = container.file_size(self._f)
            self.header, self._start, self.version = container.read_header(self._f, self._size)
            entries = [parse_entry(t) for t in self.header["tensors"]]
            check_claim(decode_bytes(entries), max_bytes)
            if strict:
                self._verify_at_open()
        except BaseException:
            self.close()
            raise
        self._entries = {e.name: e for e in entries}

    def __enter__(self) -> PermFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
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
    def data_offset(self) -> int:
        """Where the payload area starts in the file (entries' offsets count from it)."""
        return self._start

    @property
    def metadata(self) -> Metadata:
        """The metadata map (``pf.metadata`` or ``pf.metadata()``)."""
        meta = self.header.get("metadata")
        return Metadata(meta if isinstance(meta, dict) else {})

    def entry(self, name: str) -> Entry:
        """The parsed header entry of one tensor."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.path}") from None

    def aliases(self) -> dict[str, str]:
        """Tied names stored once (alias -> stored tensor name), from the metadata;
        entries that do not name a stored tensor are ignored."""
        try:
            found = json.loads(self.metadata.get(ALIASES_KEY, "{}"))
        except ValueError:
            return {}
        if not isinstance(found, dict):
            return {}
        return {
            a: n
            for a, n in found.items()
            if isinstance(a, str) and isinstance(n, str) and n in self._entries
            and a not in self._entries
        }  # fmt: skip

    def plan(self) -> Plan | None:
        """The plan the file records (its seed and seeded tensors), if it has a seed."""
        seed = self.header.get("seed")
        if not isinstance(seed, int):
            return None
        plan = Plan(seed)
        for name, e in self._entries.items():
            if e.seeded is not None:
                plan.tensors[name] = TensorPlan(dict(e.seeded.seed.spec), e.seeded.seed.key)
        return plan

    def payload(self, name: str) -> bytes:
        """The coded bytes of one tensor, as stored (checked by :func:`decode_tensor`)."""
        e = self.entry(name)
        self._f.seek(self._start + e.offset)
        payload = self._f.read(e.length)
        if len(payload) != e.length:
            raise FormatError(f"file truncated inside tensor {name!r}")
        return payload

    def storage(self, name: str) -> np.ndarray:
        """Decode one tensor, in its storage dtype (bfloat16 as uint16 bit patterns)."""
        return self._storage(name, self.payload(name))

    def _storage(self, name: str, payload: bytes) -> np.ndarray:
        entry = self.entry(name)
        try:
            return decode_entry(entry, payload)
        except MemoryError:
            raise LimitError(
                f"tensor {name!r} needs {entry.nbytes:,} bytes: not enough memory"
            ) from None

    def get_tensor(self, name: str) -> Any:
        """Decode one tensor (verifying its checksums), as this reader's framework holds
        it: here a numpy array, bfloat16 as ``ml_dtypes.bfloat16`` where installed."""
        out = self.storage(name)
        return bfloat16_view(out) if self.entry(name).dtype == "bfloat16" else out

    tensor = get_tensor

    def tensors(self) -> Iterator[tuple[str, Any]]:
        """Every tensor, decoded in file order; with ``PERMCODEC_THREADS`` > 1, several at
        once (a tensor of more than its share of the values on threads of its own)."""
        threads = runs.decode_threads()
        if threads == 1 or len(self._entries) < 2:
            for name in self._entries:
                yield name, self.get_tensor(name)
            return
        from concurrent.futures import ThreadPoolExecutor

        share = sum(e.numel for e in self._entries.values()) / threads
        pending: deque[tuple[str, Any]] = deque()
        with ThreadPoolExecutor(threads, thread_name_prefix="permcodec-tensors") as pool:
            for name, entry in self._entries.items():
                inner = threads if entry.numel > share else 1
                pending.append((name, pool.submit(self._get, name, self.payload(name), inner)))
                if len(pending) > threads:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()

    def _get(self, name: str, payload: bytes, threads: int) -> Any:
        """:meth:`get_tensor` of a payload read before, on a pool thread that decodes
        on ``threads`` threads."""
        runs.threads_here(threads)
        out = self._storage(name, payload)
        return bfloat16_view(out) if self.entry(name).dtype == "bfloat16" else out

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
                self.storage(name)
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
        for e in self._entries.values():
            numel = e.numel if e.shape else 1
            bits = 8 * e.length
            row = {
                "name": e.name,
                "shape": list(e.shape),
                "dtype": e.dtype,
                "coding": e.coding,
                "numel": numel,
                "bytes": e.length,
                "bits_per_weight": bits / numel if numel else 0.0,
            }
            seeded = e.seeded
            if seeded is not None:
                row["spec"] = seeded.seed.spec
                row.update(e.codec.describe(e.params))
                if e.rel_error is not None:
                    row["rel_error"] = e.rel_error
                b = seeded.bound_bits
                if e.codec.lossless(e.params) and b:
                    row["bound_bits_per_weight"] = b / numel if numel else 0.0
                    row["ratio_to_bound"] = bits / b
                    seeded_bits += bits
                    seeded_bound += b
                else:
                    lossy_bits += bits
            elif e.rel_error is not None:  # a grid: lossy, fitted to the trained values
                row.update(e.codec.describe(e.params), rel_error=e.rel_error)
                lossy_bits += bits
            rows.append(row)
            payload_bits += bits
            numel_all += numel
        file_bits = 8 * self._size
        sizes = self.size_split()
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
            "weight_matrices": sizes,
        }

    def size_split(self) -> dict[str, float]:
        """The file's bits split between its weight matrices (floating-point tensors of
        two or more dimensions: Linear and Conv weights), everything else (biases, norm
        layers, buffers) and the metadata. Each tensor's share is its payload and its
        header entry; the container (preamble, header keys, digests, padding, trailer)
        goes to the weight matrices. ``bits_per_weight`` is the matrices' share over
        their values: the figure ``init(..., bpw=R)`` keeps at most R."""
        import msgpack

        weight_bits = other_bits = 0
        weights = 0
        for e in self._entries.values():
            bits = 8 * (e.length + len(msgpack.packb(e.fields, use_bin_type=True)))
            if e.dtype in FLOAT_DTYPES and len(e.shape) >= 2:
                weight_bits += bits
                weights += e.numel
            else:
                other_bits += bits
        meta = self.header.get("metadata")
        meta_bits = 8 * len(msgpack.packb(meta, use_bin_type=True)) if meta else 0
        container = 8 * self._size - weight_bits - other_bits - meta_bits
        total = weight_bits + container
        return {
            "numel": weights,
            "bits": total,
            "bits_per_weight": total / weights if weights else 0.0,
            "other_bits": other_bits,
            "metadata_bits": meta_bits,
        }


def decode_entry(entry: Entry, payload: bytes) -> np.ndarray:
    """Rebuild one tensor from its entry and payload; checks both digests."""
    name = entry.name
    if container.section_digest(payload) != entry.payload_digest:
        raise IntegrityError(f"checksum mismatch in the payload of tensor {name!r}", name)
    out = entry.codec.decode(entry.params, payload)
    if container.section_digest(np.ascontiguousarray(out)) != entry.digest:
        raise IntegrityError(f"digest mismatch in decoded tensor {name!r}", name)
    return out


def decode_tensor(fields: Mapping[str, Any], payload: bytes) -> np.ndarray:
    """:func:`decode_entry` of a header map (one that passed the container's checks;
    its offset and length may be left out)."""
    return decode_entry(parse_entry({"offset": 0, "length": len(payload), **fields}), payload)


def bfloat16_view(a: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bits as an ``ml_dtypes.bfloat16`` array (unchanged without
    ml_dtypes)."""
    try:
        import ml_dtypes
    except ImportError:
        return a
    return a.view(ml_dtypes.bfloat16)
