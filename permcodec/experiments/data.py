"""Image classification datasets held in memory as torch tensors, and their minibatches.

Readers for MNIST-format IDX files (optionally gzipped) and the CIFAR-10 "python
version" batches, which are pickles and therefore read by an unpickler that can build
numpy arrays and nothing else. Every dataset is normalized per channel with the mean
and standard deviation of its training split, and kept as float32 ``N, C, H, W``.
torchvision is optional: it is only used to download MNIST or CIFAR-10 when no folder
is given.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..errors import PermcodecError, require

__all__ = [
    "DATASETS",
    "Dataset",
    "batches",
    "load_cifar10_folder",
    "load_dataset",
    "load_digits",
    "load_idx_folder",
    "read_idx",
]

#: Names :func:`load_dataset` knows.
DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "idx")

#: Where the Debian package ``dataset-fashion-mnist`` puts its (gzipped) IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Where torchvision downloads go when no ``data_dir`` is given.
CACHE_DIR = Path("~/.cache/permcodec")


@dataclass
class Dataset:
    """A train/test split of square images: float32 ``N, C, H, W`` and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.dim() != 4 or x.shape[2] != x.shape[3]:
                raise PermcodecError(
                    f"{self.name}: {split} images must be N, C, H, W with H == W, "
                    f"got shape {tuple(x.shape)}"
                )
            if y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise PermcodecError(
                    f"{self.name}: {x.shape[0]} {split} images but labels of shape {tuple(y.shape)}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise PermcodecError(
                f"{self.name}: train images are {tuple(self.x_train.shape[1:])} but test "
                f"images are {tuple(self.x_test.shape[1:])}"
            )

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])


def _make_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int | None = None,
) -> Dataset:
    """A :class:`Dataset` from ``N, C, H, W`` image arrays, normalized with train statistics.

    ``num_classes`` defaults to the largest label plus one; labels must lie in
    ``0 .. num_classes - 1``.
    """
    ys = []
    for split, y in (("train", y_train), ("test", y_test)):
        if y.dtype.kind not in "iu":
            raise PermcodecError(f"{name}: {split} labels must be integers, got {y.dtype}")
        ys.append(torch.from_numpy(y.astype(np.int64)))
    if len(ys[0]) == 0 or len(ys[1]) == 0:
        raise PermcodecError(f"{name}: the train and test splits must not be empty")
    lo = int(min(ys[0].min(), ys[1].min()))
    hi = int(max(ys[0].max(), ys[1].max()))
    if num_classes is None:
        num_classes = hi + 1
    if lo < 0 or hi >= num_classes:
        raise PermcodecError(f"{name}: labels must lie in 0..{num_classes - 1}, found {lo}..{hi}")
    xs = [torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32) for x in (x_train, x_test)]
    if xs[0].dim() != 4:
        raise PermcodecError(f"{name}: images must be N, C, H, W, got {tuple(xs[0].shape)}")
    var, mean = torch.var_mean(xs[0], dim=(0, 2, 3), correction=0, keepdim=True)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays 0
    xs = [x.sub_(mean).div_(std) for x in xs]
    return Dataset(name, xs[0], ys[0], xs[1], ys[1], num_classes)


# ---------------------------------------------------------------- IDX (MNIST format)

#: IDX data type code -> big-endian numpy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def _read_exactly(f: BinaryIO, n: int, path: Path, what: str) -> bytearray:
    """``n`` bytes of ``f``, read in chunks so memory follows the data actually there."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            raise PermcodecError(
                f"{path}: truncated IDX file: {what} needs {n} bytes, only {len(buf)} present"
            )
        buf += chunk
    return buf


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array stored in an IDX file (MNIST format), gunzipped if it is gzipped.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then each
    dimension as a big-endian uint32; the values follow, big-endian. The header's
    sizes are only believed as far as the file's bytes go: data is read in chunks,
    and a short or over-long file raises :class:`PermcodecError`. Returns a native
    byte order array.
    """
    path = Path(path)
    try:
        raw = path.open("rb")
    except OSError as e:
        raise PermcodecError(f"cannot read IDX file {path}: {e.strerror or e}") from None
    with raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        f: BinaryIO = raw
        if gzipped:
            f = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        try:
            return _parse_idx(f, path)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            what = "damaged gzip stream" if gzipped else "read error"
            raise PermcodecError(f"{path}: {what}: {e}") from None
        finally:
            if gzipped:
                f.close()


def _parse_idx(f: BinaryIO, path: Path) -> np.ndarray:
    magic = _read_exactly(f, 4, path, "the magic number")
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES:
        raise PermcodecError(
            f"{path}: not an IDX file (magic 0x{bytes(magic).hex()}; expected 0x0000TTNN "
            f"with type TT in {', '.join(f'{t:02x}' for t in IDX_TYPES)})"
        )
    dtype, ndim = IDX_TYPES[magic[2]], magic[3]
    header = _read_exactly(f, 4 * ndim, path, f"the {ndim} dimensions")
    shape = tuple(int.from_bytes(header[4 * i : 4 * i + 4], "big") for i in range(ndim))
    count = 1
    for d in shape:
        count *= d
    data = _read_exactly(f, count * dtype.itemsize, path, f"a {dtype.name} array of {shape}")
    if f.read(1):
        raise PermcodecError(
            f"{path}: size mismatch: more bytes than the header's {dtype.name} array of {shape}"
        )
    a = np.frombuffer(data, dtype=dtype).reshape(shape)
    return a if dtype.itemsize == 1 else a.astype(dtype.newbyteorder("="))


#: IDX file stems of an MNIST-format folder: (split, kind) -> (name, idx suffix).
_IDX_FILES = {
    ("train", "images"): ("train-images", "idx3-ubyte"),
    ("train", "labels"): ("train-labels", "idx1-ubyte"),
    ("test", "images"): ("t10k-images", "idx3-ubyte"),
    ("test", "labels"): ("t10k-labels", "idx1-ubyte"),
}


def _idx_candidates(stem: str, suffix: str) -> list[str]:
    names = [f"{stem}-{suffix}", f"{stem}.{suffix}"]
    return names + [n + ".gz" for n in names]


def load_idx_folder(
    folder: str | os.PathLike[str], *, name: str | None = None, num_classes: int | None = None
) -> Dataset:
    """An MNIST-format folder: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each possibly ``.gz`` or
    spelled with a dot (``train-images.idx3-ubyte``). Images become ``N, 1, H, W``.

    ``num_classes`` defaults to the largest label plus one.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PermcodecError(f"IDX folder {folder} does not exist")
    found: dict[tuple[str, str], Path] = {}
    missing = []
    for key, (stem, suffix) in _IDX_FILES.items():
        names = _idx_candidates(stem, suffix)
        hit = next((folder / n for n in names if (folder / n).is_file()), None)
        if hit is None:
            missing.append(" or ".join(names))
        else:
            found[key] = hit
    if missing:
        raise PermcodecError(f"{folder} lacks MNIST-format files: " + "; ".join(missing))
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        images = read_idx(found[(split, "images")])
        labels = read_idx(found[(split, "labels")])
        if images.ndim != 3:
            raise PermcodecError(
                f"{found[(split, 'images')]}: expected N, H, W images, got shape {images.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise PermcodecError(
                f"{found[(split, 'labels')]}: expected {len(images)} labels, "
                f"got shape {labels.shape}"
            )
        arrays[f"x_{split}"] = images[:, None]
        arrays[f"y_{split}"] = labels
    return _make_dataset(name or folder.name, num_classes=num_classes, **arrays)


# ---------------------------------------------------------------- CIFAR-10 python batches


def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    """The only globals a pickled numpy array needs, under numpy 1.x and 2.x names."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,
    }
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        # protocol 5 pickles of arrays (Python 3.14's default) go through _frombuffer
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, numbers and numpy arrays; refuses every other global,
    so a crafted file cannot run code."""

    _allowed = _numpy_reconstructors()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise PermcodecError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise PermcodecError("refusing to unpickle a persistent id")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except PermcodecError as e:
        raise PermcodecError(f"{path}: {e}") from None
    except OSError as e:
        raise PermcodecError(f"cannot read CIFAR-10 batch {path}: {e.strerror or e}") from None
    except Exception as e:  # any malformed pickle: UnpicklingError, EOFError, ValueError, ...
        raise PermcodecError(f"{path}: not a CIFAR-10 batch: {type(e).__name__}: {e}") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise PermcodecError(f"{path}: not a CIFAR-10 batch (needs a dict with data and labels)")
    data, labels = d[b"data"], d[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise PermcodecError(f"{path}: data must be an N x 3072 uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise PermcodecError(f"{path}: data must be N x 3072, got {data.shape}")
    try:
        y = np.asarray(labels)
    except Exception:
        y = np.asarray([], dtype=object)
    if y.dtype.kind not in "iu" or y.shape != (len(data),):
        raise PermcodecError(f"{path}: labels must be {len(data)} integers")
    return data.reshape(-1, 3, 32, 32), y


def load_cifar10_folder(folder: str | os.PathLike[str]) -> Dataset:
    """CIFAR-10 from its python batches ``data_batch_1`` .. ``_5`` and ``test_batch``,
    in ``folder`` or its ``cifar-10-batches-py`` subfolder. The pickles are read with an
    unpickler that only builds numpy arrays."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PermcodecError(f"CIFAR-10 folder {folder} does not exist")
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in [*train_names, "test_batch"] if not (folder / n).is_file()]
    if missing:
        raise PermcodecError(
            f"{folder} lacks CIFAR-10 python batches: {', '.join(missing)} "
            "(from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)"
        )
    train = [_load_cifar_batch(folder / n) for n in train_names]
    x_test, y_test = _load_cifar_batch(folder / "test_batch")
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return _make_dataset("cifar10", x_train, y_train, x_test, y_test, num_classes=10)


# ---------------------------------------------------------------- digits, and by name


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, no download): 1437 train, 360 test,
    split by ``np.random.default_rng(0).permutation``."""
    datasets = require("sklearn.datasets", "the digits dataset", "scikit-learn", "train")
    d = datasets.load_digits()
    images = np.asarray(d.images, dtype=np.float32)[:, None]  # 0..16
    labels = np.asarray(d.target, dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    tr, te = order[:1437], order[1437:]
    return _make_dataset("digits", images[tr], labels[tr], images[te], labels[te], num_classes=10)


def _torchvision_download(cls_name: str, root: Path) -> Any:
    """torchvision's ``cls_name`` (e.g. ``"MNIST"``) downloaded into ``root``, or None
    when torchvision is not installed."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        return None
    root.mkdir(parents=True, exist_ok=True)
    try:
        return getattr(tvd, cls_name)(str(root), train=True, download=True)
    except Exception as e:  # network errors, bad checksums
        raise PermcodecError(f"downloading {cls_name} with torchvision failed: {e}") from None


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """A dataset by name (see :data:`DATASETS`):

    - ``digits``: scikit-learn's 8x8 digits, built in (``data_dir`` is ignored);
    - ``fashion-mnist``: IDX folder, by default the Debian package
      ``dataset-fashion-mnist``'s ``/usr/share/datasets/fashion-mnist``;
    - ``mnist``: IDX folder ``data_dir``; without one, downloaded by torchvision (when
      installed) into ``~/.cache/permcodec``;
    - ``cifar10``: folder of CIFAR-10 python batches, or downloaded likewise;
    - ``idx``: any MNIST-format folder ``data_dir``.
    """
    if name == "digits":
        return load_digits()
    if name == "fashion-mnist":
        folder = Path(data_dir).expanduser() if data_dir is not None else FASHION_MNIST_DIR
        if not folder.is_dir():
            hint = (
                "install it with: apt-get install dataset-fashion-mnist"
                if data_dir is None
                else "pass the folder holding its IDX files"
            )
            raise PermcodecError(f"Fashion-MNIST folder {folder} does not exist; {hint}")
        return load_idx_folder(folder, name="fashion-mnist", num_classes=10)
    if name == "mnist":
        if data_dir is not None:
            return load_idx_folder(_existing(data_dir, "MNIST"), name="mnist", num_classes=10)
        cached = CACHE_DIR.expanduser() / "MNIST" / "raw"
        if not cached.is_dir():
            ds = _torchvision_download("MNIST", CACHE_DIR.expanduser())
            if ds is None:
                raise PermcodecError(
                    "MNIST needs data_dir, a folder of its IDX files (train-images-idx3-ubyte"
                    ".gz etc. from https://yann.lecun.com/exdb/mnist/), or torchvision "
                    "installed to download it"
                )
            cached = Path(ds.raw_folder)
        return load_idx_folder(cached, name="mnist", num_classes=10)
    if name == "cifar10":
        if data_dir is not None:
            return load_cifar10_folder(_existing(data_dir, "CIFAR-10"))
        cached = CACHE_DIR.expanduser() / "cifar-10-batches-py"
        if not cached.is_dir() and _torchvision_download("CIFAR10", CACHE_DIR.expanduser()) is None:
            raise PermcodecError(
                "CIFAR-10 needs data_dir, a folder of its python batches (from "
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), or torchvision "
                "installed to download it"
            )
        return load_cifar10_folder(cached)
    if name == "idx":
        if data_dir is None:
            raise PermcodecError("dataset idx needs data_dir, a folder of MNIST-format files")
        folder = _existing(data_dir, "IDX")
        return load_idx_folder(folder, name=folder.name)
    raise PermcodecError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


def _existing(data_dir: str | os.PathLike[str], what: str) -> Path:
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise PermcodecError(f"{what} folder {folder} does not exist")
    return folder


# ---------------------------------------------------------------- minibatches


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches of ``(x, y)`` in one pass; the last may be smaller. With ``shuffle``
    the order is ``torch.randperm`` from ``generator`` (the global generator if None)."""
    if batch_size < 1:
        raise PermcodecError(f"batch_size must be positive, got {batch_size}")
    n = x.shape[0]
    if y.shape[0] != n:
        raise PermcodecError(f"{n} inputs but {y.shape[0]} labels")
    if not shuffle:
        for i in range(0, n, batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    order = torch.randperm(n, generator=generator, device=generator.device if generator else "cpu")
    order = order.to(x.device)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield x[idx], y[idx.to(y.device)]
