"""Every code block of the README runs as written: the python and bash blocks, in order,
in one fresh folder (later blocks use the files earlier ones wrote), each in its own
process. A block preceded by ``<!-- not run by the README test -->`` (installation
commands) is left out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SKIP = "<!-- not run by the README test -->"
FENCE = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>[a-z]*)\n(?P<code>.*?)\n```", re.S)


def blocks() -> list[tuple[str, str]]:
    """(language, code) of every python and bash block not marked to skip."""
    text = "\n" + README.read_text()
    out = []
    for m in FENCE.finditer(text):
        if m["lang"] in ("python", "bash") and m["before"].strip() != SKIP:
            out.append((m["lang"], m["code"]))
    return out


def test_the_readme_is_short_and_has_blocks_to_run():
    assert len(README.read_text().splitlines()) < 250
    assert {lang for lang, _ in blocks()} == {"python", "bash"}


@pytest.mark.slow
def test_every_readme_block_runs_as_written(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")  # the train verb's embedded dataset
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for i, (lang, code) in enumerate(blocks()):
        cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-e", "-c", code]
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, f"block {i} ({lang}):\n{code}\n---\n{done.stderr[-2000:]}"
