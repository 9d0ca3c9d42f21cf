"""Hostile `.perm` files for the tests and the mutation campaign (fuzz/mutate.py).

Edits a file the way an attacker would (header fields at extreme values, payload bytes
changed), optionally resealing every checksum so that the readers' own validation is
what gets tested, and runs a reader on the result, recording what it did, how long it
took and how much it allocated.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import random
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

import permcodec
from permcodec.coding import encoder
from permcodec.core.initializers import InitSpec, generate, initial_rows
from permcodec.core.plan import Plan
from permcodec.errors import IntegrityError, LossyWarning, PermcodecError
from permcodec.format import container
from permcodec.format.entry import parse_entry
from permcodec.format.posthoc import write_trained
from permcodec.format.reader import decode_tensor
from permcodec.format.writer import write_file
from permcodec.numpy import load as load_numpy

Header = dict[str, Any]

#: Longest a reader may take on one of these small files (the numpy reference coders,
#: forced by PERMCODEC_PURE_NUMPY=1, are far slower than the kernels).
SECONDS = 30.0 if os.environ.get("PERMCODEC_PURE_NUMPY", "") not in ("", "0") else 2.0
#: Memory a reader may take beyond the decoded size the file claims.
SLACK = 32 << 20
#: Cap on claimed sizes while fuzzing, so no case reserves more than this.
FUZZ_MAX_BYTES = 256 << 20


# ---------------------------------------------------------------- files


def split(raw: bytes) -> tuple[Header, list[bytes], int]:
    """(header, payload of each entry, version) of a file whose header is valid."""
    header, start, version = container.read_header(io.BytesIO(raw), len(raw))
    payloads = [
        raw[start + t["offset"] : start + t["offset"] + t["length"]] for t in header["tensors"]
    ]
    return header, payloads, version


def seal(header: Header, payloads: list[bytes], version: int | None = None) -> bytes:
    """A file with ``payloads`` back to back, offsets, payload digests, header digest
    and trailer all recomputed (the entries' other fields are kept as they are)."""
    offset = 0
    for t, p in zip(header["tensors"], payloads, strict=False):
        t["offset"], t["length"] = offset, len(p)
        t["payload_digest"] = container.section_digest(p)
        offset += len(p)
    out = io.BytesIO()
    container.write(out, header, payloads, version=version)
    return out.getvalue()


def reseal(
    raw: bytes,
    header_edit: Callable[[Header], None] | None = None,
    payload_edit: Callable[[list[bytes]], list[bytes]] | None = None,
    keep_layout: bool = False,
) -> bytes:
    """``raw`` with its header and/or payloads edited and every checksum made valid.

    With ``keep_layout`` the edited header is written as is (its offsets, lengths and
    payload digests included), and only the header digest and the trailer are redone.
    """
    header, payloads, version = split(raw)
    if header_edit:
        header_edit(header)
    if payload_edit:
        payloads = payload_edit(payloads)
    if not keep_layout:
        return seal(header, payloads, version)
    out = io.BytesIO()
    container.write(out, header, payloads, version=version)
    return out.getvalue()


def edit_entry(raw: bytes, name: str, **changes: Any) -> bytes:
    """``raw`` with the fields of tensor ``name`` changed (``spec_x`` changes the spec's
    ``x``) and the header digest and trailer resealed."""
    return reseal(raw, entry_edit(name, **changes), keep_layout=True)


def entry_edit(name: str, **changes: Any) -> Callable[[Header], None]:
    def edit(header: Header) -> None:
        for t in header["tensors"]:
            if t["name"] == name:
                for k, v in changes.items():
                    if k.startswith("spec_"):
                        t["spec"][k[5:]] = v
                    else:
                        t[k] = v

    return edit


def near_init(init: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Each row rearranged so that ranks move by about ``noise * m`` from the init's."""
    rows, m = init.shape
    out = np.empty_like(init)
    for r in range(rows):
        order = np.argsort(init[r], kind="stable")
        rank = np.empty(m)
        rank[order] = np.arange(m)
        target = np.argsort(rank + rng.normal(0, noise * m + 1e-9, m), kind="stable")
        out[r, target] = init[r, order]
    return out


def shuffled_rows(init: np.ndarray, seed: int) -> np.ndarray:
    """Every row of ``init`` (rows, m) rearranged at random: an exact arrangement."""
    rng = np.random.default_rng(seed)
    return np.take_along_axis(init, rng.permuted(np.indices(init.shape)[-1], axis=-1), -1)


@functools.lru_cache(maxsize=1)
def valid_files() -> dict[str, bytes]:
    """Small valid files that use every coding, several dtypes and edge shapes."""
    plan = Plan(7)
    seeded = {
        "fc.weight": ((6, 40), InitSpec("he_uniform"), "float32"),
        "sparse.weight": ((4, 32), InitSpec("normal", std=0.05, density=0.5), "float16"),
        "ctx.weight": ((8, 64), InitSpec("he_normal"), "float32"),
    }
    items = []
    for name, (shape, spec, dtype) in seeded.items():
        tp = plan.add(name, spec, shape)
        init = generate(tp.spec, tp.key, shape).astype(dtype).reshape(shape)
        # ctx.weight stays at its init: the context-coded (bucket-rans exact) case
        items.append((name, init if name == "ctx.weight" else shuffled_rows(init, 1), dtype))
    items += [
        ("fc.bias", np.linspace(-1, 1, 6, dtype=np.float32), "float32"),
        ("zeros", np.zeros((64, 4), np.float32), "float32"),
        ("steps", np.arange(5, dtype=np.int64), "int64"),
        ("mask", np.array([True, False, True]), "bool"),
        ("scalar", np.array(3.5, np.float64), "float64"),
        ("empty", np.zeros((0, 5), np.float32), "float32"),
        ("half", np.arange(12, dtype=np.uint16) * 321, "bfloat16"),
    ]
    out = {}
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore", LossyWarning)
        path = Path(d) / "f.perm"
        write_file(path, items, plan, {"note": "valid"})
        out["exact"] = path.read_bytes()
        write_file(path, items[:3], plan, {}, tensor_bits={"fc.weight": 2, "sparse.weight": 1})
        out["lossy"] = path.read_bytes()
        write_trained(path, grid_items(), {"note": "grids"}, max_error=0.001)
        out["grid"] = path.read_bytes()
        levels_plan, levels = levels_items()
        with (  # level-rans however small (the writer keeps small tensors as multisets)
            mock.patch.object(encoder, "LEVEL_COMPARE_VALUES", 0),
            mock.patch.object(encoder.rate, "payload_allowance", lambda bound: float("inf")),
        ):
            write_file(path, levels, levels_plan, {"note": "levels"})
        out["levels"] = path.read_bytes()
    codings = {t["coding"] for raw in out.values() for t in split(raw)[0]["tensors"]}
    want = {"row-rans", "bucket-rans", "grid-rans", "level-rans", "raw", "raw-zstd"}
    assert codings == want, codings
    return out


def levels_items() -> tuple[Plan, list[tuple[str, np.ndarray, str]]]:
    """Rows of a few levels (what rate-controlled training writes), moved from their init
    to neighbouring levels: ternary float32 rows in four lanes of two rows, and float16
    rows of five levels in lanes of one or two rows."""
    plan = Plan(8)
    rng = np.random.default_rng(8)
    items = []
    cases = {
        "tern.weight": ((8, 100), InitSpec("levels", levels=1, scale=0.1, density=0.3), "float32"),
        "five.weight": ((6, 50), InitSpec("levels", levels=2, scale=0.1, density=0.7), "float16"),
    }
    for name, (shape, spec, dtype) in cases.items():
        tp = plan.add(name, spec, shape)
        init = initial_rows(tp.spec, tp.key, shape, dtype)
        latent = init.astype(np.float64) + rng.normal(0, 0.05, init.shape)
        order = np.argsort(latent, axis=1, kind="stable")
        moved = np.empty_like(init)
        np.put_along_axis(moved, order, np.sort(init, axis=1), axis=1)
        items.append((name, moved.view(np.uint16) if dtype == "bfloat16" else moved, dtype))
    return plan, items


def grid_items() -> list[tuple[str, np.ndarray, str]]:
    """Weight matrices of a model trained without permutation (grid-rans: outliers,
    several steps, tables and contexts), beside exact tensors."""
    rng = np.random.default_rng(7)
    conv = np.cumsum(rng.standard_normal((16, 4, 12)), axis=2).astype(np.float32) * 0.05
    conv[0, 0, 0] = 8.0
    fc = (rng.standard_normal((12, 64)) * rng.uniform(0.01, 1.0, (12, 1))).astype(np.float16)
    return [
        ("conv.weight", conv, "float32"),
        ("fc.weight", fc, "float16"),
        ("fc.bias", np.linspace(-1, 1, 12, dtype=np.float32), "float32"),
    ]


@functools.lru_cache(maxsize=1)
def original_tensors() -> frozenset[bytes]:
    """The bytes of every tensor of :func:`valid_files`: all a reader may return."""
    found = set()
    for raw in valid_files().values():
        header, payloads, _ = split(raw)
        for t, p in zip(header["tensors"], payloads, strict=True):
            found.add(decode_tensor(t, p).tobytes())
    return frozenset(found)


# ---------------------------------------------------------------- mutations

EXTREMES = [
    0, 1, -1, 2, 7, 2**31 - 1, 2**31, 2**32, 2**39, 2**40 - 1, 2**40, 2**62, 2**63 - 1,
    2**64 - 1, -(2**63), True, False, 0.5, float("nan"), float("inf"), "", "x", "float32",
    "bfloat16", "int8", "row-rans", "perm-rans", "bucket-rans", "grid-rans", "raw", "raw-zstd",
    None,
    [], [0], [1, 1], [2**20, 2**20], [2**39, 2**39], [-1, 2], {}, b"", b"\0" * 16,
]  # fmt: skip
ENTRY_KEYS = [
    "name", "shape", "dtype", "coding", "offset", "length", "digest", "payload_digest",
    "spec", "key", "lanes", "words", "bits", "exact", "weights", "refine_lanes",
    "steps", "q_lo", "symbols", "tables", "contexts", "outliers", "side",
]  # fmt: skip
SPEC_KEYS = ["kind", "version", "density", "granularity", "fan_in", "fan_out", "gain", "std"]
BYTE_DAMAGE = ("flip", "truncate", "insert", "overwrite")
HEADER_EDITS = ("entry", "spec", "drop", "top", "swap", "shape")
PAYLOAD_EDITS = ("flip", "cut", "insert", "rotate")


def damage_bytes(raw: bytes, rng: random.Random, kind: str) -> bytes:
    """A bit flipped, the file cut short, bytes inserted or overwritten; checksums
    left as they are."""
    n = len(raw)
    at = rng.randrange(n)
    if kind == "flip":
        return raw[:at] + bytes([raw[at] ^ (1 << rng.randrange(8))]) + raw[at + 1 :]
    if kind == "truncate":
        return raw[:at]
    junk = rng.randbytes(rng.randint(1, 64))
    if kind == "insert":
        return raw[:at] + junk + raw[at:]
    bad = raw[:at] + junk[:16] + raw[at + len(junk[:16]) :]
    return bad if bad != raw else raw[:at]


def header_edit(rng: random.Random, where: str) -> Callable[[Header], None]:
    """One edit of the header map: an entry's or a spec's field set to an extreme
    value, a field dropped, a top-level field changed, entries swapped, or a seeded
    shape blown up with its fans kept consistent."""
    value, pick = rng.choice(EXTREMES), rng.randrange(1 << 20)

    def edit(header: Header) -> None:
        tensors = header["tensors"]
        t = tensors[pick % len(tensors)]
        if where == "entry":
            t[ENTRY_KEYS[pick % len(ENTRY_KEYS)]] = value
        elif where == "spec" and isinstance(t.get("spec"), dict):
            t["spec"][SPEC_KEYS[pick % len(SPEC_KEYS)]] = value
        elif where == "drop":
            t.pop(ENTRY_KEYS[pick % len(ENTRY_KEYS)], None)
        elif where == "top":
            header[["byteorder", "tensors", "seed", "metadata"][pick % 4]] = value
        elif where == "swap" and len(tensors) > 1:
            i, j = pick % len(tensors), (pick // 7) % len(tensors)
            tensors[i], tensors[j] = tensors[j], tensors[i]
        elif where == "shape":
            rows = value if isinstance(value, int) and 0 <= value < 2**40 else 2**14
            t["shape"] = [rows, 2 ** (pick % 11)]
            if isinstance(t.get("spec"), dict):
                t["spec"]["fan_in"], t["spec"]["fan_out"] = t["shape"][1], rows

    return edit


def payload_edit(rng: random.Random, kind: str) -> Callable[[list[bytes]], list[bytes]]:
    """One edit of one payload: a flipped bit, cut short, bytes inserted, or its u32
    words rotated."""
    pick, at, bit = rng.randrange(1 << 20), rng.randrange(1 << 20), rng.randrange(8)
    extra = rng.randbytes(rng.randint(1, 32))

    def edit(payloads: list[bytes]) -> list[bytes]:
        i = pick % len(payloads)
        p = payloads[i]
        if not p:
            p = extra
        elif kind == "flip":
            k = at % len(p)
            p = p[:k] + bytes([p[k] ^ (1 << bit)]) + p[k + 1 :]
        elif kind == "cut":
            p = p[: at % len(p)]
        elif kind == "insert":
            k = at % (len(p) + 1)
            p = p[:k] + extra + p[k:]
        else:
            k = 4 * ((at % len(p)) // 4)
            p = p[k:] + p[:k]
        return [*payloads[:i], p, *payloads[i + 1 :]]

    return edit


def mutate(raw: bytes, rng: random.Random, family: str) -> bytes | None:
    """One mutation of ``family`` ("bytes", "header" or "payload"); None when the edit
    cannot even be written as msgpack."""
    if family == "bytes":
        return damage_bytes(raw, rng, rng.choice(BYTE_DAMAGE))
    if family == "payload":
        return reseal(raw, None, payload_edit(rng, rng.choice(PAYLOAD_EDITS)))
    try:
        return reseal(raw, header_edit(rng, rng.choice(HEADER_EDITS)), None, rng.random() < 0.5)
    except (OverflowError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------- readers


def _read_all(path: Path, strict: bool = True) -> dict[str, np.ndarray]:
    with permcodec.open(path, strict=strict, max_bytes=FUZZ_MAX_BYTES) as pf:
        return {name: pf.tensor(name) for name in pf}


def _salvage(path: Path) -> dict[str, np.ndarray]:
    """What ``open(strict=False)`` can still read: every tensor that decodes."""
    with permcodec.open(path, strict=False, max_bytes=FUZZ_MAX_BYTES) as pf:
        out = {}
        for name in pf:
            with contextlib.suppress(IntegrityError):
                out[name] = pf.tensor(name)
        return out


def _verify(path: Path) -> dict[str, np.ndarray]:
    with permcodec.open(path, strict=False, max_bytes=FUZZ_MAX_BYTES) as pf:
        problems = pf.verify()
    if problems:
        raise IntegrityError(str(problems))
    return {}


READERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    "load_numpy": lambda p: load_numpy(p, max_bytes=FUZZ_MAX_BYTES),
    "open": _read_all,
    "salvage": _salvage,
    "verify": _verify,
}
#: Readers that refuse a file on any damage (the others read around it).
STRICT_READERS = ("load_numpy", "open", "verify")


def claimed(raw: bytes) -> int:
    """The decoded size a file claims (0 when its header does not validate)."""
    try:
        return sum(parse_entry(t).nbytes for t in split(raw)[0]["tensors"])
    except PermcodecError:
        return 0


@dataclass
class Outcome:
    """What one reader did with one file."""

    result: str  # "ok", or the name of the permcodec error raised
    seconds: float
    peak_bytes: int
    claimed_bytes: int
    wrong: list[str]  # tensors returned that are not among the originals

    def problems(self) -> list[str]:
        """Every broken rule: too slow, too much memory, wrong tensors returned."""
        out = [f"returned a wrong {name!r}" for name in self.wrong]
        if self.seconds >= SECONDS:
            out.append(f"took {self.seconds:.2f} s")
        if self.peak_bytes > min(self.claimed_bytes, FUZZ_MAX_BYTES) + SLACK:
            out.append(f"allocated {self.peak_bytes:,} bytes for a {self.claimed_bytes:,} claim")
        return out


def run_reader(raw: bytes, reader: str, tmp: Path) -> Outcome:
    """Run one reader on ``raw``, measuring time and traced allocations; any exception
    that is not a permcodec error propagates."""
    path = tmp / "case.perm"
    path.write_bytes(raw)
    tracemalloc.start()
    t0 = time.perf_counter()
    out: dict[str, np.ndarray] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning would be an error under -W error
            out = READERS[reader](path)
        result = "ok"
    except PermcodecError as e:
        result = type(e).__name__
    finally:
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    originals = original_tensors()
    wrong = [
        name
        for name, a in out.items()
        if (a.view(np.uint16) if a.dtype.name == "bfloat16" else a).tobytes() not in originals
    ]
    return Outcome(result, seconds, peak, claimed(raw), wrong)


def warm_up(tmp: Path) -> None:
    """Load the kernels (and torch, where a reader imports it) before anything is timed."""
    for raw in valid_files().values():
        for reader in READERS:
            run_reader(raw, reader, tmp)
