"""Mutation campaign: thousands of damaged and crafted `.perm` files against the readers.

Three families of mutations of small valid files (every coding; tests/hostile_files.py):
``bytes`` (bit flips, truncations, insertions, overwrites; checksums left as they are),
``header`` (fields set to extreme values, dropped, entries swapped, shapes blown up;
every checksum recomputed) and ``payload`` (payload bytes changed, payload digests
recomputed). Each file goes to one reader in turn (``load_numpy``; ``open`` then every
tensor; ``salvage``: ``open(strict=False)`` and every tensor that still decodes;
``verify``). The rules: only a permcodec error, or exactly the original tensors (and
for ``bytes``, a refusal by every reader but salvage); under 2 s; traced allocations
under the decoded size the file claims plus 32 MiB.

    python benchmarks/hostile_input.py [--cases 2000] [--seed 0]

prints a table and writes benchmarks/results/hostile_input.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import hostile_files as hf

FAMILIES = ("bytes", "header", "payload")
RESULTS = Path(__file__).parent / "results"


def campaign(family: str, cases: int, seed: int, tmp: Path) -> dict:
    """Run ``cases`` mutations of one family; counts of outcomes and the worst time
    and memory seen."""
    files, readers = sorted(hf.valid_files()), sorted(hf.READERS)
    results: Counter[str] = Counter()
    broken: list[dict] = []
    seconds, ratios = [], []
    written = 0
    for i in range(cases):
        rng = random.Random(f"{seed}-{family}-{i}")
        raw = hf.mutate(hf.valid_files()[files[i % len(files)]], rng, family)
        if raw is None:
            continue
        written += 1
        reader = readers[i % len(readers)]
        try:
            outcome = hf.run_reader(raw, reader, tmp)
        except Exception as e:  # a rule broken: not a permcodec error
            results[f"escaped {type(e).__name__}"] += 1
            broken.append({"case": i, "reader": reader, "error": traceback.format_exc(-3)})
            continue
        results[outcome.result] += 1
        seconds.append(outcome.seconds)
        ratios.append(outcome.peak_bytes / max(outcome.claimed_bytes, 1))
        problems = outcome.problems()
        if family == "bytes" and outcome.result == "ok" and reader in hf.STRICT_READERS:
            problems.append("accepted a damaged file")
        for problem in problems:
            broken.append({"case": i, "reader": reader, "problem": problem})
    return {
        "family": family,
        "files": written,
        "results": dict(results.most_common()),
        "broken": broken,
        "median_s": statistics.median(seconds) if seconds else 0.0,
        "max_s": max(seconds, default=0.0),
        "max_peak_over_claim": max(ratios, default=0.0),
    }


def table(rows: list[dict]) -> str:
    head = "| mutations | files | outcomes | rules broken | median s | max s |\n|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        outcomes = ", ".join(f"{k} {v}" for k, v in r["results"].items())
        lines.append(
            f"| {r['family']} | {r['files']} | {outcomes} | {len(r['broken'])} | "
            f"{r['median_s']:.4f} | {r['max_s']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000, help="mutations per family")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        hf.warm_up(tmp)
        t0 = time.perf_counter()
        rows = [campaign(f, args.cases, args.seed, tmp) for f in FAMILIES]
        wall = time.perf_counter() - t0
    md = table(rows)
    total = sum(r["files"] for r in rows)
    broken = sum(len(r["broken"]) for r in rows)
    md += f"\n\n{total} files, {broken} rules broken, {wall:.0f} s in all (seed {args.seed}).\n"
    print(md)
    for r in rows:
        for b in r["broken"][:5]:
            print(r["family"], b)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hostile_input.md").write_text(md)
    (RESULTS / "hostile_input.json").write_text(
        json.dumps({"cases": args.cases, "seed": args.seed, "families": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
