#!/usr/bin/env python3
"""Mutation campaign against the native decoder built with AddressSanitizer and UBSan.

Each case is one mutation (tests/hostile_files.py: damaged bytes, or header and payload
edits with every checksum resealed, so the decoder's own checks are what gets tested)
of a small valid file of every coding; the sanitized ``permcodec-decode`` decodes it to
``.safetensors``, on one thread or two (every other case). A finding is a crash (a signal), a sanitizer report, an exit code
other than 0, 1, 3 or 4, more than one line on stderr, or a run over ``--timeout``
seconds; each is saved as ``OUT/finding-<n>.perm`` with its stderr. Cases run in
parallel (``--jobs``).

    make -C native asan
    python fuzz/fuzz_native.py --cases 100000 --jobs 2 --out fuzz/out-native
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hostile_files as hf  # noqa: E402

BINARY = ROOT / "native" / "permcodec-decode-asan"
ALLOWED = {0, 1, 3, 4}
FAMILIES = ("bytes", "header", "payload")


def one_case(
    binary: Path, raw: bytes, seed: int, work: Path, timeout: float
) -> tuple[str, bytes, str] | None:
    """Mutate ``raw`` with ``seed`` and decode it; (what went wrong, the input, stderr)
    or None."""
    rng = random.Random(seed)
    bad = hf.mutate(raw, rng, rng.choice(FAMILIES))
    if bad is None:
        return None
    path, out = work / f"{seed}.perm", work / f"{seed}.safetensors"
    path.write_bytes(bad)
    try:
        done = subprocess.run(
            [str(binary), str(path), "-o", str(out), "--force", "--max-bytes", "256M",
             "--threads", str(1 + seed % 2)],
            capture_output=True, text=True, timeout=timeout,
            env={"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "halt_on_error=1"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "timeout", bad, ""
    finally:
        path.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    if "Sanitizer" in done.stderr or "runtime error:" in done.stderr:
        return "sanitizer", bad, done.stderr
    if done.returncode not in ALLOWED:
        return f"exit {done.returncode}", bad, done.stderr
    if len(done.stderr.strip().splitlines()) > 1:
        return "several lines", bad, done.stderr
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="first case's seed")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=ROOT / "fuzz" / "out-native")
    args = ap.parse_args()
    if not BINARY.exists():
        print(f"build it first: make -C native asan ({BINARY} is missing)", file=sys.stderr)
        return 2
    files = list(hf.valid_files().values())
    findings, t0 = 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        binary = Path(tmp) / BINARY.name  # a copy: a rebuild meanwhile does not disturb it
        shutil.copy2(BINARY, binary)
        seeds = range(args.seed, args.seed + args.cases)
        results = pool.map(
            lambda s: one_case(binary, files[s % len(files)], s, Path(tmp), args.timeout), seeds
        )
        for seed, found in zip(seeds, results, strict=True):
            if found is not None:
                args.out.mkdir(parents=True, exist_ok=True)
                what, bad, err = found
                (args.out / f"finding-{seed}.perm").write_bytes(bad)
                (args.out / f"finding-{seed}.txt").write_text(f"{what}\n{err}")
                findings += 1
                print(f"case {seed}: {what}", flush=True)
    print(f"{args.cases} cases in {time.perf_counter() - t0:.0f} s, {findings} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
