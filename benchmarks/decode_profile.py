"""Where a decode's time goes: each stage of ``permcodec.load_numpy`` timed on real files.

One command:

    python benchmarks/decode_profile.py FILE.perm [FILE.perm ...]

For each file: one warm-up decode, then ``--repeat`` timed decodes with the decoder's
stages wrapped by timers (regenerating the initial rows, order keys, classing and
sorting them, bucketing, each entropy-decoding kernel, rebuilding the values, placing
rows, the output digest); "other" is the rest (Python between the stages, reading the
file, checks). Prints a table per file (milliseconds and nanoseconds per weight of one
decode, share of the total) and writes ``results/decode_profile.json`` and ``.md``.
The timers add a little time of their own; compare shares, and take speed from
``speed.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import permcodec
from permcodec.coding import arrangement, buckets, rans, runs
from permcodec.format import container

RESULTS = Path(__file__).parent / "results"
#: (module, attribute, stage): the leaf functions of a seeded decode, none inside another.
STAGES: tuple[tuple[Any, str, str], ...] = (
    (runs, "initial_rows", "regenerate initial rows"),
    (runs, "order_keys", "order keys"),
    (arrangement, "row_classes", "sort and class rows"),
    (arrangement, "init_classes", "sort and class rows"),
    (buckets, "bucketize", "bucket rows"),
    (runs, "init_buckets", "sort, class and bucket rows (compiled)"),
    (runs, "place_refined", "rebuild values"),
    (rans, "decode_rows_run", "entropy decode: row-rans"),
    (rans, "decode_ctx_run", "entropy decode: bucket stream"),
    (rans, "decode_run", "entropy decode: refinement"),
    (buckets, "unrefine", "rebuild values"),
    (arrangement, "rebuild", "rebuild values"),
    (runs.LazyRows, "put", "place rows"),
    (container, "section_digest", "digest (integrity check)"),
)


@contextmanager
def timed_stages(spent: Counter[str]) -> Iterator[None]:
    """Wrap every stage's function so that its time adds to ``spent[stage]``."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in STAGES]

    def timer(fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - t0

        return run

    try:
        for (owner, name, stage), (_, _, fn) in zip(STAGES, saved, strict=True):
            setattr(owner, name, timer(fn, stage))
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def profile(path: Path, repeat: int) -> dict[str, Any]:
    """Stage times of one decode of ``path`` (means over ``repeat`` decodes)."""
    weights = sum(int(v.size) for v in permcodec.load_numpy(path).values())
    with permcodec.open(path) as f:
        codings = sorted({f.entry(k).coding for k in f if f.entry(k).seeded})
    spent: Counter[str] = Counter()
    with timed_stages(spent):
        t0 = time.perf_counter()
        for _ in range(repeat):
            permcodec.load_numpy(path)
        total = (time.perf_counter() - t0) / repeat
    stages = {stage: s / repeat for stage, s in spent.most_common()}
    stages["other"] = max(0.0, total - sum(stages.values()))
    return {
        "file": path.name,
        "codings": codings,
        "weights": weights,
        "seconds": total,
        "stages": stages,
    }


def table(rec: dict[str, Any]) -> str:
    """A markdown table of one file's stages."""
    n, total = rec["weights"], rec["seconds"]
    lines = [
        f"{rec['file']} ({', '.join(rec['codings'])}; {n:,} values): "
        f"{total * 1e3:.1f} ms, {total / n * 1e9:.1f} ns per value",
        "",
        "| stage | ms | ns/value | share |",
        "|---|---|---|---|",
    ]
    for stage, s in rec["stages"].items():
        lines.append(f"| {stage} | {s * 1e3:.2f} | {s / n * 1e9:.1f} | {s / total:.0%} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help=".perm files to decode")
    ap.add_argument("--repeat", type=int, default=5, help="timed decodes per file")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    args = ap.parse_args()
    os.environ.setdefault("PERMCODEC_THREADS", "1")
    records = [profile(p, args.repeat) for p in args.files]
    md = "\n\n".join(table(r) for r in records) + "\n"
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decode_profile.json").write_text(json.dumps(records, indent=1))
    (args.out / "decode_profile.md").write_text(md)
    print(f"wrote {args.out / 'decode_profile.json'} and decode_profile.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
