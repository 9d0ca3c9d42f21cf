#!/usr/bin/env python3
"""Coverage-guided fuzzer (atheris / libFuzzer) of the `.perm` readers.

What it checks: on any input bytes, ``permcodec.numpy.load``, ``permcodec.open``
(then ``keys()``, ``tensor(name)`` for each, ``info()``), ``PermFile.verify()`` and
``permcodec.torch.load`` either succeed or raise ``permcodec.PermcodecError``. A finding
is raised (libFuzzer then saves the input as ``<artifact_prefix>crash-<sha1>``) for:

* any other exception (IndexError, TypeError, MemoryError, numba or zstd errors, ...);
* a reader call slower than ``--slow`` seconds (default 2; a CPU timer interrupts it
  there, and a call that is slow once is run again, so numba compilation does not
  count): ``SlowInputError``;
* a reader call that grows the peak virtual or resident memory by more than
  ``--alloc-mb`` MiB (default 256), or by more than the memory the readers allow the
  file's decoding to take (``permcodec.format.entry.decode_bytes``: the decoded tensors and
  one run's working set, capped by ``max_bytes``), whichever is larger:
  ``LargeAllocationError``, located by running the
  input again under an address-space limit. Each call may also grow the address space
  by at most ``--as-mb`` MiB (default 1024; 0: no cap), so a larger allocation fails at
  once as a MemoryError where it is made instead of running into ``-rss_limit_mb``.

Modes (``--mode``): ``structured`` (default) parses the input with
``permcodec.format.container.read_header``, mutates the header map and/or the payloads, then
reseals the file (fresh payload digests, offsets and trailer; :func:`reseal`), so the
checksums do not stop the mutant before the decoders. ``bytes`` uses libFuzzer's own
byte mutations only (mostly stopped by the checksums; it exercises the preamble and
header parser). The compiled kernels cannot be instrumented; ``PERMCODEC_PURE_NUMPY=1``
fuzzes the numpy reference coders instead, with coverage inside the rANS loops.

Run, from the repository root (one process; libFuzzer flags pass through)::

    python fuzz/fuzz_perm.py --mode=structured -max_total_time=1200 -rss_limit_mb=2048 \\
        -timeout=10 -max_len=65536 -artifact_prefix=fuzz/out/ fuzz/corpus
    python fuzz/fuzz_perm.py --mode=bytes -max_total_time=300 -rss_limit_mb=2048 \\
        -timeout=10 -artifact_prefix=fuzz/out/ fuzz/corpus-bytes
    python fuzz/fuzz_perm.py --make-corpus fuzz/corpus   # only write the seed files
    python fuzz/fuzz_perm.py fuzz/out/crash-...          # re-run one input

An empty (or missing) corpus directory is filled with seed files first: small valid
files of every coding the writer produces (and one ``perm-rans``). Findings go to
``-artifact_prefix`` (libFuzzer may lose an artifact when its periodic timeout alarm
hits the exit); ``--findings DIR`` also records each distinct finding as
``DIR/<signature>.perm`` and ``.txt`` and lists it in ``DIR/known.txt``; an input that
raises a finding listed there is kept (the smallest) but not raised again, so a
restarted run looks for new ones. A signature is the exception type and the innermost
permcodec frame (``TypeError@permcodec/core/initializers.py:156``); memory and time
findings use the innermost function of a coding module instead
(``MemoryError@permcodec/coding/row_rans.py:run``), as where they surface depends on
the memory the process holds. (Findings recorded before permcodec 0.5 name the modules
of the flat layout: ``codec.py``, ``initializers.py``.) ``--only SIG`` raises
that finding alone (for ``-minimize_crash=1``). Known reproducers: ``tests/data/hostile``
(see its README.md).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import io
import math
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris
import numpy as np
import zstandard

# Kernel modules that compile their own bytecode (triton) must stay uninstrumented.
_NUMBA_MODULES = [
    "permcodec.kernels.rans_triton",
]
with atheris.instrument_imports(include=["permcodec"], exclude=_NUMBA_MODULES):
    import permcodec
    import permcodec.numpy
    import permcodec.torch
    from permcodec.coding import arrangement, rans
    from permcodec.core import initializers
    from permcodec.core.checks import is_int
    from permcodec.core.dtypes import STORAGE, from_float32, order_keys
    from permcodec.core.plan import Plan
    from permcodec.errors import PermcodecError
    from permcodec.format import container
    from permcodec.format.entry import decode_bytes, parse_entry
    from permcodec.format.reader import PermFile
    from permcodec.format.writer import write_file

# after the instrumented imports, so the permcodec modules it uses are instrumented
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hostile_files import near_init, shuffled_rows  # noqa: E402

PACKAGE_DIR = Path(permcodec.__file__).resolve().parent
_HERE = os.path.abspath(__file__)


def _read_settings() -> None:
    """Our settings, from the environment (where :func:`parse_own_flags` puts them)."""
    global MODE, SLOW_S, ALLOC_MB, FINDINGS, AS_MB, ONLY
    MODE = os.environ.get("FUZZ_PERM_MODE", "structured")
    SLOW_S = float(os.environ.get("FUZZ_PERM_SLOW", "2"))
    ALLOC_MB = float(os.environ.get("FUZZ_PERM_ALLOC_MB", "256"))
    FINDINGS = os.environ.get("FUZZ_PERM_FINDINGS", "")
    AS_MB = float(os.environ.get("FUZZ_PERM_AS_MB", "1024"))
    ONLY = os.environ.get("FUZZ_PERM_ONLY", "")


_read_settings()
#: Our flags, moved into the environment so that libFuzzer's re-runs of this script
#: (``-minimize_crash``) see them too.
OWN_FLAGS = {
    "--mode": "FUZZ_PERM_MODE",
    "--slow": "FUZZ_PERM_SLOW",
    "--alloc-mb": "FUZZ_PERM_ALLOC_MB",
    "--findings": "FUZZ_PERM_FINDINGS",
    "--as-mb": "FUZZ_PERM_AS_MB",
    "--only": "FUZZ_PERM_ONLY",
}


class SlowInputError(Exception):
    """A reader call took longer than ``SLOW_S`` seconds, twice in a row."""


class LargeAllocationError(Exception):
    """A reader call grew the peak memory by more than ``ALLOC_MB`` MiB."""


class HangError(BaseException):
    """Raised by the CPU timer inside a slow call (a BaseException, so that the
    readers' ``except Exception`` wrappers do not turn it into a FormatError)."""


#: Where a memory or time finding surfaces depends on how much memory the process
#: already holds, so these are told apart by the innermost function of a coding module
#: (the coding that asked for the work), not by the innermost permcodec frame.
RESOURCE_ERRORS = (MemoryError, HangError, SlowInputError, LargeAllocationError)
RESOURCE_ANCHORS = ("perm_rans.py", "row_rans.py", "bucket_rans.py", "raw.py")


# ---------------------------------------------------------------- seed corpus


def _seeded(
    plan: Plan, name: str, spec: Any, shape: tuple[int, ...], dtype: str, noise: float | None
) -> tuple[str, np.ndarray, str]:
    """A seeded tensor of ``plan`` in its storage dtype: a rearrangement of its init."""
    tp = plan.add(name, spec, shape)
    init = initializers.generate(tp.spec, tp.key, shape)
    init = from_float32(init, dtype)
    rows = (
        shuffled_rows(init, 7)
        if noise is None
        else near_init(init, np.random.default_rng(7), noise)
    )
    return name, rows.reshape(shape), dtype


def _file_bytes(items: list[tuple[str, np.ndarray, str]], plan: Plan | None, **kw: Any) -> bytes:
    """The bytes ``write_file`` produces for ``items``."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "seed.perm")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_file(path, items, plan, **kw)
        return Path(path).read_bytes()


def _spec(kind: str, **kw: Any) -> permcodec.InitSpec:
    return permcodec.InitSpec(kind, **kw)


def seed_files() -> dict[str, bytes]:
    """Small valid files: every coding the writer produces, every dtype family, sparse,
    empty and scalar tensors, every initializer kind."""
    rng = np.random.default_rng(0)
    seeds = {}
    plan = Plan(1)
    seeds["row_rans_f32"] = _file_bytes(
        [
            _seeded(plan, "fc.weight", _spec("he_uniform"), (4, 24), "float32", None),
            ("fc.bias", rng.standard_normal(4).astype(np.float32), "float32"),
        ],
        plan,
        metadata={"k": "v"},
    )
    plan = Plan(2)
    seeds["row_rans_f16_bf16_f64"] = _file_bytes(
        [
            _seeded(
                plan, "h", _spec("kaiming_normal", mode="fan_out"), (3, 2, 2, 2), "float16", None
            ),
            _seeded(plan, "b", _spec("normal", std=0.02), (5, 12), "bfloat16", None),
            _seeded(plan, "d", _spec("uniform", a=-0.25, b=0.75), (3, 9), "float64", None),
        ],
        plan,
    )
    plan = Plan(3)
    seeds["bucket_exact"] = _file_bytes(
        [
            _seeded(plan, "w", _spec("he_uniform"), (4, 64), "float32", 0.02),
            _seeded(plan, "v", _spec("he_normal"), (2, 64), "float16", 0.0),
        ],
        plan,
    )
    plan = Plan(4, bits=2)
    seeds["bucket_lossy"] = _file_bytes(
        [
            _seeded(plan, "w", _spec("he_uniform"), (4, 40), "float32", 0.05),
            _seeded(
                plan,
                "c",
                _spec("constant", value=0.08, random_sign=True, density=0.6),
                (3, 20),
                "float32",
                None,
            ),
            _seeded(plan, "t", _spec("binary"), (2, 16), "bfloat16", 0.0),
            _seeded(
                plan,
                "l",
                _spec("levels", levels=2, scale=0.1, density=0.4),
                (3, 20),
                "float32",
                None,
            ),
        ],
        plan,
        tensor_bits={"t": 1, "c": 3},
    )
    plan = Plan(5)
    seeds["sparse_and_tensor_granularity"] = _file_bytes(
        [
            _seeded(plan, "s", _spec("he_uniform", density=0.3), (5, 30), "float32", None),
            _seeded(
                plan, "g", _spec("glorot_uniform", granularity="tensor"), (3, 7), "float32", None
            ),
            _seeded(plan, "z", _spec("normal", density=0.0), (2, 6), "float32", None),
        ],
        plan,
    )
    plan = Plan(6)
    seeds["empty_and_scalar"] = _file_bytes(
        [
            _seeded(plan, "e", _spec("he_uniform"), (0, 4), "float32", None),
            _seeded(plan, "e2", _spec("normal"), (3, 0), "float16", None),
            _seeded(plan, "sc", _spec("normal"), (), "float32", None),
            ("step", np.array(12345, dtype=np.int64), "int64"),
            ("none", np.zeros((0,), dtype=np.int64), "int64"),
            ("x", np.array(1.5, dtype=np.float32), "float32"),
        ],
        plan,
    )
    seeds["raw_dtypes"] = _file_bytes(
        [
            ("zeros", np.zeros((4, 16), dtype=np.int64), "int64"),
            ("flags", np.array([True, False, True, True]), "bool"),
            ("q", np.arange(-128, 128, 9, dtype=np.int8), "int8"),
            ("u", np.arange(0, 250, 7, dtype=np.uint8), "uint8"),
            ("i16", np.array([[-32768, 32767], [0, 1]], dtype=np.int16), "int16"),
            ("i32", np.arange(-5, 5, dtype=np.int32).reshape(2, 5), "int32"),
            ("f16", rng.standard_normal(6).astype(np.float16), "float16"),
            ("bf", rng.integers(0, 2**16, 5).astype(np.uint16), "bfloat16"),
            ("f64", rng.standard_normal(3), "float64"),
        ],
        None,
    )
    plan = Plan(7)
    seeds["kinds"] = _file_bytes(
        [
            _seeded(
                plan,
                "tn",
                _spec("trunc_normal", mean=0.05, std=0.5, a=-0.6, b=0.9),
                (2, 8),
                "float32",
                None,
            ),
            _seeded(
                plan, "tv", _spec("two_value", low=-0.5, high=1.5, p=0.25), (2, 8), "float32", None
            ),
            _seeded(plan, "co", _spec("constant", value=0.08), (2, 8), "float32", None),
            _seeded(plan, "xn", _spec("glorot_normal"), (2, 8), "float64", None),
            _seeded(plan, "td", _spec("torch_default"), (3, 4, 2), "float16", None),
            _seeded(
                plan,
                "qu",
                _spec("quantile", knots=[-1.0, -0.2, 0.0, 0.5, 2.0]),
                (2, 8),
                "float32",
                None,
            ),
        ],
        plan,
    )
    seeds["perm_rans_v1"] = _perm_rans_file()
    return seeds


def _perm_rans_file() -> bytes:
    """A version-1 ``perm-rans`` file (writers no longer produce the coding), re-coded
    from a ``row-rans`` one with the reference coder."""
    plan = Plan(8)
    name, arr, dtype = _seeded(
        plan, "w", _spec("he_uniform", density=0.5), (6, 20), "float32", None
    )
    parsed = parse(
        _file_bytes([(name, arr, dtype), ("b", np.zeros(3, np.float32), "float32")], plan)
    )
    assert parsed is not None
    header, payloads = parsed
    tp = plan.tensors[name]
    init = from_float32(initializers.generate(tp.spec, tp.key, arr.shape), dtype)
    rc = arrangement.row_classes(init, order_keys(init, dtype))
    cls = arrangement.classes_of(order_keys(arr.reshape(init.shape), dtype), rc, name)
    states, words = rans.encode(cls, rc.counts, 2)
    header["tensors"][0].update(coding="perm-rans", lanes=2)
    payloads[0] = states.astype("<u8").tobytes() + words.astype("<u4").tobytes()
    return reseal(header, payloads)


def write_corpus(directory: str) -> list[str]:
    """Write :func:`seed_files` into ``directory``; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, data in seed_files().items():
        path = os.path.join(directory, f"seed_{name}.perm")
        Path(path).write_bytes(data)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- the readers


def _numpy_load(path: str) -> None:
    permcodec.numpy.load(path)


def _open_all(path: str) -> None:
    """``permcodec.open``: keys, every tensor (a damaged one may not stop the rest), info."""
    with permcodec.open(path) as pf:
        names = pf.keys()  # the API under test, not dict iteration
        for name in names:
            with contextlib.suppress(PermcodecError):
                pf.tensor(name)
        pf.info()


def _verify(path: str) -> None:
    with PermFile(path) as pf:
        pf.verify()


def _torch_load(path: str) -> None:
    permcodec.torch.load(path)


READERS: tuple[tuple[str, Callable[[str], None]], ...] = (
    ("numpy.load", _numpy_load),
    ("open", _open_all),
    ("verify", _verify),
    ("torch.load", _torch_load),
)


# ---------------------------------------------------------------- findings


def _in_package(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(PACKAGE_DIR)


def signature(exc: BaseException, kind: str | None = None) -> str:
    """``Type@permcodec/file.py:line``: the exception type (or ``kind``) and the
    innermost permcodec frame of its traceback (else the innermost frame not in this
    harness). Resource findings: ``Type@permcodec/coding/<coding>.py:function``."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) != _HERE
    ]
    inside = [f for f in frames if _in_package(f.filename)]
    anchored = [f for f in inside if Path(f.filename).name in RESOURCE_ANCHORS]
    if isinstance(exc, RESOURCE_ERRORS) and anchored:
        where = Path(anchored[-1].filename).name
        return f"{kind or type(exc).__name__}@{PACKAGE_DIR.name}/coding/{where}:{anchored[-1].name}"
    top = inside[-1] if inside else (frames[-1] if frames else None)
    if top is None:
        where = "?"
    else:
        where = f"{PACKAGE_DIR.name}/{os.path.relpath(top.filename, PACKAGE_DIR)}:{top.lineno}"
        if not inside:
            where = f"{os.path.basename(top.filename)}:{top.lineno}"
    return f"{kind or type(exc).__name__}@{where}"


def _slug(sig: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in sig)


def _known() -> set[str]:
    path = os.path.join(FINDINGS, "known.txt")
    if not FINDINGS or not os.path.exists(path):
        return set()
    return set(Path(path).read_text().split("\n")) - {""}


def _record(sig: str, data: bytes, text: str) -> bool:
    """Save a finding under ``FINDINGS``; returns whether it was already known."""
    known = sig in _known()
    base = os.path.join(FINDINGS, _slug(sig))
    if not known or len(data) < os.path.getsize(base + ".perm"):
        Path(base + ".perm").write_bytes(data)
        Path(base + ".txt").write_text(text)
    if not known:
        with open(os.path.join(FINDINGS, "known.txt"), "a") as f:
            f.write(sig + "\n")
    return known


def _report(exc: BaseException, cause: BaseException | None, reader: str, data: bytes) -> None:
    """Raise ``exc`` (located by ``cause``, if given) unless ``--findings`` knows it."""
    cap_address_space(0)  # its traceback may still hold the memory that ran out
    where = cause if cause is not None and cause.__traceback__ is not None else exc
    if where.__traceback__ is None:  # nothing raised: name the reader
        sig = f"{type(exc).__name__}@reader:{reader}"
    else:
        sig = signature(where, type(exc).__name__ if where is not exc else None)
    if ONLY and sig != ONLY:  # minimizing one finding: the others do not count
        return
    text = f"{sig}\nreader: {reader}\n" + "".join(traceback.format_exception(where))
    if FINDINGS:
        os.makedirs(FINDINGS, exist_ok=True)
        if _record(sig, data, text):
            return
    print(f"\nFINDING {sig} (reader {reader})", file=sys.stderr, flush=True)
    if exc is where:
        raise exc
    raise exc from cause


# ---------------------------------------------------------------- one input


def _on_cpu_timer(signum: int, frame: Any) -> None:
    raise HangError(f"over {SLOW_S} s of CPU")


def _timed_call(reader: Callable[[str], None], path: str) -> tuple[float, BaseException | None]:
    """Run ``reader(path)``; (wall seconds, the exception if it is not a
    PermcodecError). A CPU timer interrupts it after ``SLOW_S`` seconds."""
    signal.signal(signal.SIGPROF, _on_cpu_timer)
    t0 = time.perf_counter()
    try:
        signal.setitimer(signal.ITIMER_PROF, SLOW_S)
        try:
            reader(path)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
    except PermcodecError:
        return time.perf_counter() - t0, None
    except (Exception, HangError) as e:
        return time.perf_counter() - t0, e
    return time.perf_counter() - t0, None


def _memory_kb() -> dict[str, int]:
    """VmPeak, VmHWM and VmSize of this process, in KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmPeak", "VmHWM", "VmSize"):
                out[key] = int(rest.split()[0])
    return out


def _alloc_site(reader: Callable[[str], None], path: str) -> BaseException | None:
    """Run ``reader`` again under an address-space limit of ``ALLOC_MB`` above the
    current size, so the large allocation fails where it is made."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = (_memory_kb()["VmSize"] + int(ALLOC_MB * 1024)) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        return _timed_call(reader, path)[1]
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def cap_address_space(headroom_mb: float) -> None:
    """Let the address space grow at most ``headroom_mb`` MiB from now on (0: lift it):
    a larger allocation then fails as a MemoryError where it is made, instead of
    running into libFuzzer's ``-rss_limit_mb``."""
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = hard
    if headroom_mb > 0:
        limit = (_memory_kb()["VmSize"] + int(headroom_mb * 1024)) * 1024
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _budget_kb(data: bytes) -> int:
    """What the readers allow decoding ``data`` to take (KiB), 0 if they refuse it at
    once; a growth within it is the documented behaviour, not a finding."""
    try:
        header = container.read_header(io.BytesIO(data), len(data))[0]
        return decode_bytes([parse_entry(t) for t in header["tensors"]]) // 1024
    except PermcodecError:
        return 0


def _check_reader(name: str, reader: Callable[[str], None], path: str, data: bytes) -> bool:
    """One reader on one input: exception, time and memory checks; returns False after
    a (known) slow call, so the other readers are not run on the input."""
    before = _memory_kb()
    elapsed, exc = _timed_call(reader, path)
    if isinstance(exc, HangError) or elapsed > SLOW_S:
        elapsed, exc = _timed_call(reader, path)  # compiling numba kernels is slow once
        if isinstance(exc, HangError) or elapsed > SLOW_S:
            msg = f"{name} took over {SLOW_S} s ({elapsed:.2f} s wall)"
            _report(SlowInputError(msg), exc, name, data)
            return False
    if exc is not None:
        _report(exc, None, name, data)
    after = _memory_kb()
    grown = max(after["VmPeak"] - before["VmPeak"], after["VmHWM"] - before["VmHWM"])
    if grown > max(ALLOC_MB * 1024, 1.25 * _budget_kb(data)):
        msg = f"{name} grew the peak memory by {grown // 1024} MiB on {len(data)} input bytes"
        _report(LargeAllocationError(msg), _alloc_site(reader, path), name, data)
    return True


_SCRATCH: list[str] = []


def _scratch_path() -> str:
    """The temporary file every input is written to (removed at exit)."""
    if not _SCRATCH:
        d = tempfile.mkdtemp(prefix="fuzz_perm_")
        atexit.register(shutil.rmtree, d, True)
        _SCRATCH.append(os.path.join(d, "input.perm"))
    return _SCRATCH[0]


def test_one_input(data: bytes) -> None:
    """The fuzz target: every reader on ``data``, written to a file."""
    path = _scratch_path()
    Path(path).write_bytes(data)
    for name, reader in READERS:
        cap_address_space(AS_MB)  # from the current size: memory kept by earlier calls
        if not _check_reader(name, reader, path, data):
            return


# ---------------------------------------------------------------- structured mutator

INTS = (
    *(0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 31, 32, 33, 63, 64, 255, 256, 4096, 65535, 65536),
    *(2**31 - 1, 2**31, 2**31 + 1, 2**32 - 1, 2**32, 2**40 - 1, 2**40, 2**53),
    *(2**62, 2**63 - 1, 2**63, 2**64 - 1, -1, -2, -(2**31), -(2**63)),
)
FLOATS = (
    *(0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 0.999, 1e-9, 1e-300, 5e-324, -5e-324),
    *(1e308, -1e308, 1.7976931348623157e308, 3.4028235e38, 3.5e38, 65504.0, 65520.0),
    *(6e-8, math.nan, math.inf, -math.inf, 2**53, 2**64 - 1, -(2**63), 0, 1),
)
WRONG = (None, True, False, 0.0, 1.5, -1.0, math.nan, "1", "", b"\x00", [], [1], {}, {"a": 1})
STATES = (0, 1, 2**31 - 1, 2**31, 2**31 + 1, 2**32, 2**32 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1)
U32S = (0, 1, 2, 3, 4, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
DTYPES = (*STORAGE, "float8", "complex64", "", "Float32")
KINDS = (*initializers.KINDS, *initializers.ALIASES, "", "zeros")
STRINGS = {
    ("dtype",): DTYPES,
    ("coding",): container.CODINGS,
    ("spec", "kind"): KINDS,
    ("spec", "granularity"): ("row", "tensor", "col", ""),
    ("spec", "mode"): ("fan_in", "fan_out", "fan_avg", ""),
}
INT_KEYS = ("offset", "length", "lanes", "words", "bits", "refine_lanes")
SPEC_INTS = ("fan_in", "fan_out", "version")
EXTRA_KEYS = ("lanes", "words", "bits", "exact", "weights", "refine_lanes", "spec", "key")

Payloads = list[bytes]


def parse(data: bytes) -> tuple[dict[str, Any], Payloads] | None:
    """(header, payload of every entry) of a file ``read_header`` accepts, else None."""
    try:
        header, start, _ = container.read_header(io.BytesIO(data), len(data))
    except Exception:
        return None
    spans = [(start + e["offset"], start + e["offset"] + e["length"]) for e in header["tensors"]]
    return header, [data[a:b] for a, b in spans]


def reseal(header: dict[str, Any], payloads: Payloads, layout: bool = True) -> bytes:
    """A complete file of ``header`` and ``payloads`` (back to back) with fresh payload
    digests and trailer; ``layout`` also sets every entry's offset and length."""
    offset = 0
    for entry, payload in zip(header["tensors"], payloads, strict=True):
        if isinstance(entry, dict):
            if layout:
                entry["offset"], entry["length"] = offset, len(payload)
            entry["payload_digest"] = container.section_digest(payload)
        offset += len(payload)
    out = io.BytesIO()
    container.write(out, header, payloads)
    return out.getvalue()


def restamp(data: bytes, rng: random.Random) -> bytes:
    """Another preamble version (or flags), with the trailer recomputed."""
    magic, version, flags, hlen = container.PREAMBLE.unpack_from(data)
    if rng.random() < 0.8:
        version = rng.choice((0, 1, 2, 3, 4, 2**32 - 1))
    else:
        flags = rng.choice((1, 2**31, 2**32 - 1))
    body = container.PREAMBLE.pack(magic, version, flags, hlen)
    body += data[container.PREAMBLE.size : -container.TRAILER]
    return body + hashlib.blake2b(body, digest_size=container.TRAILER).digest()


def _pick_int(rng: random.Random, cur: Any) -> Any:
    """An extreme, nearby or wrong-typed value for an integer field."""
    r = rng.random()
    if r < 0.45 or not is_int(cur):
        return rng.choice(INTS) if r < 0.9 else rng.choice(WRONG)
    if r < 0.8:
        return cur + rng.choice((-2, -1, 1, 2, cur, -cur, -2 * cur))
    if r < 0.9:
        return rng.randrange(0, 1 << rng.choice((4, 8, 16, 32)))
    return rng.choice(WRONG)


def _entry(rng: random.Random, header: dict[str, Any]) -> dict[str, Any] | None:
    entries = [e for e in header["tensors"] if isinstance(e, dict)]
    return rng.choice(entries) if entries else None


def _int_paths(e: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Paths of the integer fields of an entry (shape dims, key, fans, weights, ...)."""
    paths: list[tuple[Any, ...]] = [(k,) for k in INT_KEYS if k in e]
    for k in ("shape", "key", "weights"):
        if isinstance(e.get(k), list):
            paths += [(k, i) for i in range(len(e[k]))]
    if isinstance(e.get("spec"), dict):
        paths += [("spec", k) for k in SPEC_INTS if k in e["spec"]]
    return paths


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    _get(obj, path[:-1])[path[-1]] = value


def mut_int(rng: random.Random, header: dict[str, Any], payloads: Payloads) -> bool:
    """An integer field of an entry to an extreme or wrong-typed value."""
    e = _entry(rng, header)
    if e is None:
        return True
    paths = _int_paths(e)
    if rng.random() < 0.1 or not paths:
        key = rng.choice(INT_KEYS)
        e[key] = _pick_int(rng, e.get(key))
        return key not in ("offset", "length")
    path = rng.choice(paths)
    _set(e, path, _pick_int(rng, _get(e, path)))
    return path[0] not in ("offset", "length")


def mut_drop(rng: random.Random, header: dict[str, Any], payloads: Payloads) -> bool:
    """Drop a key of an entry, of its spec, or of the top level."""
    e = _entry(rng, header)
    r = rng.random()
    target = header if r < 0.1 or e is None else e
    if r > 0.6 and e is not None and isinstance(e.get("spec"), dict):
        target = e["spec"]
    keys = [k for k in target if target is not header or k != "tensors"]
    if keys:
        del target[rng.choice(keys)]
    return True


def mut_string(rng: random.Random, header: dict[str, Any], payloads: Payloads) -> bool:
    """coding, dtype, spec kind, granularity, mode or byteorder to another string."""
    e = _entry(rng, header)
    if e is None or rng.random() < 0.05:
        header["byteorder"] = rng.choice(("little", "big", None))
        return True
    path, choices = rng.choice(list(STRINGS.items()))
    if path[0] == "spec" and not isinstance(e.get("spec"), dict):
        return True
    _set(e, path, rng.choice(choices) if rng.random() < 0.9 else rng.choice(WRONG))
    return True


def mut_spec_number(rng: random.Random, header: dict[str, Any], payloads: Payloads) -> bool:
    """A float parameter, density, random_sign or knot of a spec to an extreme value."""
    e = _entry(rng, header)
    spec = e.get("spec") if e is not None else None
    if not isinstance(spec, dict):
        return True
    keys = [k for k, v in spec.items() if isinstance(v, (int, float)) and k not in SPEC_INTS]
    if isinstance(spec.get("knots"), list) and spec["knots"] and rng.random() < 0.3:
        knots = spec["knots"]
        r = rng.random()
        if r < 0.6:
            knots[rng.randrange(len(knots))] = rng.choice(FLOATS)
        elif r < 0.8:
            spec["knots"] = knots * rng.choice((0, 1, 2, 1000))
        else:
            spec["knots"] = knots[::-1]
        return True
    if keys:
        spec[rng.choice(keys)] = rng.choice(FLOATS) if rng.random() < 0.9 else rng.choice(WRONG)
    return True


def _random_spec(rng: random.Random) -> permcodec.InitSpec:
    """A writer-side spec of any kind with plausible parameters."""
    kind = rng.choice([k for k in KINDS if k])
    params: dict[str, Any] = {
        "uniform": {"a": rng.choice((-1.0, 0.0, 1e-30)), "b": rng.choice((0.0, 1.0, 1e30))},
        "constant": {
            "value": rng.choice((0.0, -0.0, 0.08, 1e-45)),
            "random_sign": rng.random() < 0.5,
        },
        "quantile": {"knots": sorted(rng.choice(FLOATS[:11]) for _ in range(rng.randint(2, 6)))},
        "trunc_normal": {"a": -rng.choice((1e-3, 2.0, 40.0)), "b": rng.choice((1e-3, 2.0, 40.0))},
        "two_value": {"p": rng.choice((0.0, 0.5, 1.0))},
        "levels": {"levels": rng.choice((1, 2, 64, 128)), "scale": rng.choice((1e-3, 0.1, 1e30))},
    }.get(kind, {})
    density = rng.choice((1.0, 1.0, 0.0, 0.3, 0.999, 1e-9))
    granularity = rng.choice(("row", "tensor"))
    return permcodec.InitSpec(kind, density=density, granularity=granularity, **params)


def mut_spec_replace(rng: random.Random, header: dict[str, Any], payloads: Payloads) -> bool:
    """Give an entry another resolved spec (another kind, density or granularity)."""
    e = _entry(rng, header)
    if e is None or not isinstance(e.get("shape"), list):
        return True
    with contextlib.suppress(PermcodecError, TypeError, ValueError, OverflowError):
        e["spec"] = initializers.resolve(_random_spec(rng), tuple(e["shape"]))
    return True


def _new_shape(rng: random.Random, shape: list[int]) -> list[int]:
    """A reshaped, permuted, grown, shrunk or zeroed shape."""
    s = list(shape)
    r = rng.random()
    if r < 0.2 and len(s) >= 2:
        i, j = rng.sample(range(len(s)), 2)
        s[i], s[j] = s[j], s[i]
    elif r < 0.35:
        s.insert(rng.randint(0, len(s)), rng.choice((1, 1, 0, 2)))
    elif r < 0.5 and s:
        del s[rng.randrange(len(s))]
    elif r < 0.65 and len(s) >= 2:
        i = rng.randrange(len(s) - 1)
        s[i : i + 2] = [s[i] * s[i + 1]]
    elif r < 0.8 and s:
        i = rng.randrange(len(s))
        d = next((d for d in range(2, 9) if s[i] % d == 0), 1)
        s[i : i + 1] = [s[i] // d, d]
    elif r < 0.9:
        s = [] if rng.random() < 0.5 else [0] * max(len(s), 1)
    else:
        s = [rng.choice(INTS[:30]) for _ in range(rng.randint(0, 9))]
    return s


def mut_shape(rng: random.Random, header: dict[str, Any], payloads: Payloads) -> bool:
    """Reshape an entry, usually keeping its spec's fans consistent with the shape."""
    e = _entry(rng, header)
    if e is None or not isinstance(e.get("shape"), list) or not all(map(is_int, e["shape"])):
        return True
    e["shape"] = _new_shape(rng, e["shape"])
    spec = e.get("spec")
    if isinstance(spec, dict) and rng.random() < 0.8:
        spec["fan_in"], spec["fan_out"] = initializers.fans(tuple(e["shape"]))
    return True


def mut_entries(rng: random.Random, header: dict[str, Any], payloads: Payloads) -> bool:
    """Swap, duplicate or delete entries, or swap two entries' payloads."""
    tensors = header["tensors"]
    n = len(tensors)
    r = rng.random()
    if n >= 2 and r < 0.3:
        i, j = rng.sample(range(n), 2)
        tensors[i], tensors[j] = tensors[j], tensors[i]
        payloads[i], payloads[j] = payloads[j], payloads[i]
    elif n >= 2 and r < 0.55:
        i, j = rng.sample(range(n), 2)
        payloads[i], payloads[j] = payloads[j], payloads[i]
    elif n >= 1 and r < 0.8:
        i = rng.randrange(n)
        dup = copy.deepcopy(tensors[i])
        if isinstance(dup, dict):
            dup["name"] = f"{dup.get('name')}~{n}"
        tensors.append(dup)
        payloads.append(payloads[i])
    elif n >= 1:
        i = rng.randrange(n)
        del tensors[i], payloads[i]
    return True


def _put(b: bytearray, pos: int, value: int, size: int) -> None:
    b[pos : pos + size] = value.to_bytes(size, "little")


def _mutate_payload(rng: random.Random, p: bytes) -> bytes:
    """Bit flips, aligned extreme u64/u32 values (states, lengths, words), word swaps,
    truncation, growth, or libFuzzer's own mutation of the payload."""
    b = bytearray(p)
    r = rng.random()
    if r < 0.15 and b:
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    elif r < 0.3 and len(b) >= 8:
        _put(b, 8 * rng.randrange(min(len(b) // 8, 8)), rng.choice(STATES), 8)
    elif r < 0.45 and len(b) >= 4:
        _put(b, 4 * rng.randrange(len(b) // 4), rng.choice(U32S), 4)
    elif r < 0.55 and len(b) >= 8:
        i, j = (4 * rng.randrange(len(b) // 4) for _ in range(2))
        b[i : i + 4], b[j : j + 4] = b[j : j + 4], b[i : i + 4]
    elif r < 0.65 and b:
        del b[rng.choice((len(b) - rng.choice((1, 4, 8)), rng.randrange(len(b)))) :]
    elif r < 0.75:
        pos = rng.choice((len(b), 4 * rng.randrange(len(b) // 4 + 1)))
        b[pos:pos] = rng.randbytes(rng.choice((1, 4, 8, 12, 64)))
    elif r < 0.8 and b:
        i = rng.randrange(len(b))
        del b[i : i + rng.choice((1, 4, 8))]
    else:
        return atheris.Mutate(bytes(b), len(b) + 16)
    return bytes(b)


def mut_payload(rng: random.Random, header: dict[str, Any], payloads: Payloads) -> bool:
    """Mutate the payload of one entry."""
    if payloads:
        i = rng.randrange(len(payloads))
        payloads[i] = _mutate_payload(rng, payloads[i])
    return True


def _unzstd(p: bytes) -> bytes | None:
    """The content of a zstd frame that declares at most 1 MiB, else None."""
    try:
        if not 0 <= zstandard.frame_content_size(p) <= 1 << 20:
            return None
        return zstandard.ZstdDecompressor().decompress(p)
    except zstandard.ZstdError:
        return None


def _zstd_variant(rng: random.Random, raw: bytes) -> bytes:
    """``raw`` as zstd data: plain, without content size, cut, two frames, a frame with
    trailing bytes, behind a skippable frame, or of other content."""
    z = zstandard.ZstdCompressor(level=rng.choice((1, 3, 10)))
    frame = z.compress(raw)
    return rng.choice(
        (
            frame,
            zstandard.ZstdCompressor(write_content_size=False).compress(raw),
            frame[: rng.randrange(len(frame) + 1)],
            frame + z.compress(raw[:1]),
            frame + rng.randbytes(rng.choice((1, 3, 8))),
            b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"skip" + frame,
            z.compress(raw + b"\0"),
            z.compress(raw[:-1]),
            z.compress(b"\0" * rng.choice((0, 1, 1 << 16, 1 << 22))),
        )
    )


def mut_zstd(rng: random.Random, header: dict[str, Any], payloads: Payloads) -> bool:
    """Re-code a raw or raw-zstd payload as (odd) zstd data; the decoded bytes often
    still match the digest."""
    idx = [
        i
        for i, e in enumerate(header["tensors"])
        if isinstance(e, dict) and e.get("coding") in ("raw", "raw-zstd")
    ]
    if not idx:
        return True
    i = rng.choice(idx)
    e = header["tensors"][i]
    raw = payloads[i] if e["coding"] == "raw" else _unzstd(payloads[i])
    if raw is None:
        return True
    if rng.random() < 0.2:
        e["coding"], payloads[i] = "raw", raw
    else:
        e["coding"], payloads[i] = "raw-zstd", _zstd_variant(rng, raw)
    return True


def mut_top(rng: random.Random, header: dict[str, Any], payloads: Payloads) -> bool:
    """seed, metadata or an unknown key at the top level, or an unknown entry key."""
    r = rng.random()
    if r < 0.4:
        header["seed"] = rng.choice((*INTS, None, "7", 1.5, True, []))
    elif r < 0.7:
        header["metadata"] = rng.choice(({}, {"a": "b"}, {"a": 1}, [], None, "m", {b"k": b"v"}))
    elif r < 0.85:
        header[rng.choice(("format", "x", "zz"))] = rng.choice(WRONG)
    else:
        e = _entry(rng, header)
        if e is not None:
            key = rng.choice(EXTRA_KEYS)
            e[key] = copy.deepcopy(next((t[key] for t in header["tensors"] if key in t), None))
    return True


#: (weight, mutation); each returns whether reseal may lay out offsets and lengths.
MUTATIONS: tuple[tuple[int, Callable[[random.Random, dict[str, Any], Payloads], bool]], ...] = (
    (8, mut_int),
    (2, mut_drop),
    (4, mut_string),
    (4, mut_spec_number),
    (3, mut_spec_replace),
    (4, mut_shape),
    (2, mut_entries),
    (10, mut_payload),
    (2, mut_zstd),
    (1, mut_top),
)


def mutate(rng: random.Random, header: dict[str, Any], payloads: Payloads) -> bool:
    """Apply one to three mutations; returns whether offsets and lengths stay derived."""
    weights = [w for w, _ in MUTATIONS]
    layout = True
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.choices([m for _, m in MUTATIONS], weights)[0]
        layout = op(rng, header, payloads) and layout
    return layout


def structured_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """libFuzzer custom mutator: mutate the header map and payloads, then reseal; byte
    mutation when the input does not parse (or, rarely, anyway)."""
    rng = random.Random(seed)
    parsed = parse(data) if rng.random() > 0.05 else None
    if parsed is None:
        return _byte_mutation(data, max_size)
    for _ in range(8):
        header, payloads = copy.deepcopy(parsed[0]), list(parsed[1])
        try:
            out = reseal(header, payloads, mutate(rng, header, payloads))
        except Exception:  # a header msgpack or container.write cannot write: try again
            continue
        if rng.random() < 0.03:
            out = restamp(out, rng)
        if len(out) <= max_size:
            return out
    return _byte_mutation(data, max_size)


def _byte_mutation(data: bytes, max_size: int) -> bytes:
    """libFuzzer's own mutation (the input itself if it runs out of memory)."""
    try:
        return atheris.Mutate(data, max_size)
    except MemoryError:
        return data[:max_size]


# ---------------------------------------------------------------- main


def parse_own_flags(argv: list[str]) -> tuple[list[str], str | None]:
    """Move our ``--flags`` into the environment; returns (libFuzzer argv, the
    ``--make-corpus`` directory)."""
    rest, make_corpus = [argv[0]], None
    args = iter(argv[1:])
    for a in args:
        name, eq, value = a.partition("=")
        if name in (*OWN_FLAGS, "--make-corpus"):
            value = value if eq else next(args, "")
            if name == "--make-corpus":
                make_corpus = value
            else:
                os.environ[OWN_FLAGS[name]] = value
        else:
            rest.append(a)
    return rest, make_corpus


def _seed_empty_corpora(argv: list[str]) -> None:
    """Fill every empty or missing corpus directory argument with the seed files."""
    for a in argv[1:]:
        if a.startswith("-"):
            continue
        missing = not os.path.exists(a) and not a.endswith(".perm")
        if missing or (os.path.isdir(a) and not os.listdir(a)):
            print(f"fuzz_perm: writing seed files into {a}", file=sys.stderr)
            write_corpus(a)


def warm_up() -> None:
    """Run every reader on the seed files once: numba compiles its kernels, torch and
    the lazy imports load, before time and memory are measured."""
    for data in seed_files().values():
        path = _scratch_path()
        Path(path).write_bytes(data)
        for _, reader in READERS:
            with contextlib.suppress(PermcodecError):
                reader(path)


def main() -> None:
    argv, make_corpus = parse_own_flags(sys.argv)
    _read_settings()
    if MODE not in ("structured", "bytes"):
        sys.exit(f"fuzz_perm: --mode must be structured or bytes, not {MODE!r}")
    if make_corpus:
        print("\n".join(write_corpus(make_corpus)))
        return
    warnings.simplefilter("ignore")
    _seed_empty_corpora(argv)
    warm_up()
    mutator = {"custom_mutator": structured_mutator} if MODE == "structured" else {}
    atheris.Setup(argv, test_one_input, **mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
