"""Byte-level text corpora for the language models, and their batches.

The default corpus needs no download: the ``.py`` files of the running Python's own
standard library (about 30 MB on CPython 3.11), in sorted order. ``text`` reads any
folder of text files. Every file goes whole to one split, by a hash of its relative
path (one in 20 to validation), so the splits do not share a file.
"""

from __future__ import annotations

import os
import sysconfig
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import PermcodecError

#: Corpora :func:`load_text` knows.
CORPORA = ("python-stdlib", "text")
#: Most bytes of each split that are kept (the first of the corpus, in file order).
MAX_TRAIN_BYTES = 8_000_000
MAX_VAL_BYTES = 500_000
#: Validation windows a measurement uses at most (each ``context + 1`` bytes).
VAL_WINDOWS = 512


@dataclass
class TextData:
    """A corpus as two byte arrays (uint8 tensors)."""

    name: str
    train: torch.Tensor
    val: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.train) < 1024 or len(self.val) < 1024:
            raise PermcodecError(
                f"corpus {self.name!r} is too small: {len(self.train)} training and "
                f"{len(self.val)} validation bytes (at least 1024 of each)"
            )


def _files(root: Path, suffixes: tuple[str, ...] | None) -> list[Path]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "__pycache__", ".git"))
        for name in sorted(names):
            if suffixes is None or name.endswith(suffixes):
                out.append(Path(folder) / name)
    return out


def _split(root: Path, files: list[Path]) -> tuple[bytes, bytes]:
    train, val, n_train, n_val = [], [], 0, 0
    for path in files:
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue  # not text
        rel = path.relative_to(root).as_posix().encode()
        if zlib.crc32(rel) % 20 == 0:
            if n_val < MAX_VAL_BYTES:
                val.append(data)
                n_val += len(data)
        elif n_train < MAX_TRAIN_BYTES:
            train.append(data)
            n_train += len(data)
    return b"".join(train)[:MAX_TRAIN_BYTES], b"".join(val)[:MAX_VAL_BYTES]


def load_text(
    name: str = "python-stdlib", data_dir: str | os.PathLike[str] | None = None
) -> TextData:
    """``python-stdlib`` (the standard library's ``.py`` files; ``data_dir`` picks another
    folder of them) or ``text`` (every text file under ``data_dir``)."""
    if name == "python-stdlib":
        root = Path(data_dir or sysconfig.get_paths()["stdlib"])
        files = _files(root, (".py",))
    elif name == "text":
        if data_dir is None:
            raise PermcodecError("the text corpus needs a folder of text files (data_dir)")
        root = Path(data_dir)
        files = _files(root, None)
    else:
        raise PermcodecError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}")
    if not root.is_dir():
        raise PermcodecError(f"{root} is not a folder")
    train, val = _split(root, files)
    as_tensor = lambda b: torch.from_numpy(np.frombuffer(b, dtype=np.uint8).copy())  # noqa: E731
    return TextData(name, as_tensor(train), as_tensor(val))


def windows(
    data: torch.Tensor, context: int, batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random windows: inputs (batch, context) and next bytes (int64)."""
    starts = torch.randint(0, len(data) - context - 1, (batch,), generator=generator)
    idx = starts[:, None] + torch.arange(context + 1)[None, :]
    chunk = data[idx].long()
    return chunk[:, :-1], chunk[:, 1:]


def val_batches(
    data: torch.Tensor, context: int, batch: int = 32
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows of the validation split, in order (at most
    :data:`VAL_WINDOWS`), a batch at a time: the same bytes on every call."""
    n = min((len(data) - 1) // (context + 1), VAL_WINDOWS)
    chunk = data[: n * (context + 1)].long().reshape(n, context + 1)
    for i in range(0, n, batch):
        part = chunk[i : i + batch]
        yield part[:, :-1], part[:, 1:]
