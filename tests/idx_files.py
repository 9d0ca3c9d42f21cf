"""Writing small MNIST-format (IDX) files for tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from permcodec.experiments.data import IDX_TYPES

_CODE = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}


def idx_bytes(a: np.ndarray) -> bytes:
    """``a`` as an IDX file: zero bytes, type code, ndim, big-endian dims and values."""
    code = _CODE[a.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, a: np.ndarray, *, gz: bool = False) -> Path:
    data = idx_bytes(a)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_mnist(folder: Path, rng: np.random.Generator, *, gz: bool, dotted: bool = False) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images": rng.integers(0, 256, (20, 6, 6), dtype=np.uint8),
        "train-labels": np.arange(20, dtype=np.uint8) % 10,
        "t10k-images": rng.integers(0, 256, (7, 6, 6), dtype=np.uint8),
        "t10k-labels": np.arange(7, dtype=np.uint8)[::-1].copy(),
    }
    for stem, a in arrays.items():
        suffix = "idx3-ubyte" if "images" in stem else "idx1-ubyte"
        name = f"{stem}{'.' if dotted else '-'}{suffix}" + (".gz" if gz else "")
        write_idx(folder / name, a, gz=gz)
    return arrays


def learnable_mnist(
    folder: Path, n_train: int = 600, n_test: int = 200, size: int = 8, seed: int = 0
) -> None:
    """A tiny 10-class IDX dataset a small MLP learns quickly: class c lights band c."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
        for i, c in enumerate(labels.tolist()):
            images[i].reshape(-1)[c * size * size // 10 : (c + 1) * size * size // 10] += 180
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
