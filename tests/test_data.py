"""Datasets: IDX and CIFAR-10 readers (and their refusals), digits, Fashion-MNIST, batches."""

from __future__ import annotations

import builtins
import gzip
import os
import pickle
import shlex
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from idx_files import fake_mnist, idx_bytes, write_idx

from permcodec.errors import MissingDependencyError, PermcodecError
from permcodec.experiments.data import (
    FASHION_MNIST_DIR,
    Dataset,
    batches,
    load_cifar10_folder,
    load_dataset,
    load_digits,
    load_idx_folder,
    read_idx,
)

# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx_roundtrip_uint8(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    got_images = read_idx(write_idx(tmp_path / "img", images, gz=gz))
    got_labels = read_idx(write_idx(tmp_path / "lab", labels, gz=gz))
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert (tmp_path / "img").read_bytes()[:4] == (b"\x1f\x8b\x08\x00" if gz else b"\0\0\x08\x03")


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "float32", "float64"])
def test_idx_other_types(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(2)
    a = (rng.standard_normal((3, 2, 4)) * 100).astype(dtype)
    if dtype == "float32":
        a[0, 0, 0] = np.float32(-0.0)
        a[0, 0, 1] = np.float32(1e-40)  # subnormal
    got = read_idx(write_idx(tmp_path / "a", a, gz=dtype == "float32"))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    assert got.tobytes() == a.tobytes()  # bit-exact, -0.0 and subnormals included


def test_idx_errors(tmp_path: Path) -> None:
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    good = idx_bytes(a)

    def check(data: bytes, match: str, *, gz: bool = False) -> None:
        p = tmp_path / "bad"
        p.write_bytes(gzip.compress(data) if gz else data)
        with pytest.raises(PermcodecError, match=match):
            read_idx(p)

    check(b"", "truncated")
    check(good[:3], "truncated")
    check(b"\x01\x00" + good[2:], "not an IDX file")
    check(b"\x00\x00\x07\x03" + good[4:], "not an IDX file")  # unknown type code
    check(good[:10], "truncated")  # inside the dimensions
    check(good[:-1], "truncated")
    check(good[:-1], "truncated", gz=True)
    check(good + b"\0", "size mismatch")
    check(good + b"\0", "size mismatch", gz=True)
    # dims claiming ~16 TB: refused from the file's bytes, never allocated
    huge = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (60000, 60000, 4096))
    check(huge + bytes(100), "truncated")
    check(huge + bytes(100), "truncated", gz=True)
    # damaged gzip stream
    p = tmp_path / "cut.gz"
    p.write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(PermcodecError):
        read_idx(p)
    with pytest.raises(PermcodecError, match="cannot read"):
        read_idx(tmp_path / "missing")


@pytest.mark.parametrize(("gz", "dotted"), [(False, False), (True, False), (False, True)])
def test_load_idx_folder(tmp_path: Path, gz: bool, dotted: bool) -> None:
    arrays = fake_mnist(tmp_path / "mnist", np.random.default_rng(3), gz=gz, dotted=dotted)
    ds = load_idx_folder(tmp_path / "mnist")
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape == (20, 1, 6, 6) and ds.x_test.shape == (7, 1, 6, 6)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert (ds.in_channels, ds.image_size, ds.num_classes) == (1, 6, 10)
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train-labels"])
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["t10k-labels"])
    # normalized with the train statistics (the test split is not re-centred on itself)
    assert abs(ds.x_train.mean().item()) < 1e-5
    assert abs(ds.x_train.std(correction=0).item() - 1) < 1e-5
    raw = arrays["train-images"].astype(np.float64)
    expected = (arrays["t10k-images"] - raw.mean()) / raw.std()
    np.testing.assert_allclose(ds.x_test[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_idx_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(PermcodecError, match="does not exist"):
        load_idx_folder(tmp_path / "nope")
    fake_mnist(tmp_path / "m", np.random.default_rng(4), gz=True)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(PermcodecError, match="t10k-labels-idx1-ubyte") as e:
        load_idx_folder(tmp_path / "m")
    assert "train-images" not in str(e.value)
    write_idx(tmp_path / "m" / "t10k-labels-idx1-ubyte", np.zeros(6, np.uint8))
    with pytest.raises(PermcodecError, match="expected 7 labels"):
        load_idx_folder(tmp_path / "m")


def test_load_dataset_idx(tmp_path: Path) -> None:
    fake_mnist(tmp_path / "f", np.random.default_rng(5), gz=False)
    ds = load_dataset("idx", tmp_path / "f")
    assert ds.name == "f" and ds.x_train.shape == (20, 1, 6, 6)
    assert load_dataset("mnist", tmp_path / "f").name == "mnist"
    assert load_dataset("fashion-mnist", tmp_path / "f").num_classes == 10


def test_load_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(PermcodecError, match="known datasets: digits, fashion-mnist"):
        load_dataset("imagenet")
    with pytest.raises(PermcodecError, match="does not exist"):
        load_dataset("fashion-mnist", tmp_path / "nope")
    with pytest.raises(PermcodecError, match="does not exist"):
        load_dataset("cifar10", tmp_path / "nope")
    with pytest.raises(PermcodecError, match="needs data_dir"):
        load_dataset("idx")


def test_fashion_mnist_missing_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import permcodec.experiments.data as data

    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(PermcodecError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


# ---------------------------------------------------------------- CIFAR-10


def write_cifar(folder: Path, rng: np.random.Generator, n: int = 4, protocol: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_cifar10(tmp_path: Path, protocol: int) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py", np.random.default_rng(6), protocol=protocol)
    ds = load_cifar10_folder(tmp_path)  # finds the subfolder
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert (ds.in_channels, ds.image_size, ds.num_classes) == (3, 32, 10)
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("rb") as f:
        test = pickle.load(f)
    np.testing.assert_array_equal(ds.y_test.numpy(), test[b"labels"])
    raw = np.concatenate(
        [
            pickle.loads((tmp_path / "cifar-10-batches-py" / f"data_batch_{i}").read_bytes())[
                b"data"
            ]
            for i in range(1, 6)
        ]
    ).reshape(-1, 3, 32, 32)
    mean = raw.mean(axis=(0, 2, 3), keepdims=True)
    std = raw.std(axis=(0, 2, 3), keepdims=True)
    expected = (test[b"data"].reshape(-1, 3, 32, 32) - mean) / std
    np.testing.assert_allclose(ds.x_test.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert load_dataset("cifar10", tmp_path / "cifar-10-batches-py").x_train.shape[0] == 20


def test_cifar10_labels_as_numpy_array(tmp_path: Path) -> None:
    write_cifar(tmp_path, np.random.default_rng(7))
    batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": np.arange(4, dtype=np.int64)}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    assert load_cifar10_folder(tmp_path).y_test.tolist() == [0, 1, 2, 3]


def py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR-10 batch as Python 2's cPickle (protocol 2, numpy 1.x) wrote the real ones:
    ``str`` payloads as BINSTRING and ``numpy.core.multiarray._reconstruct``."""

    def sbs(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    def i4(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + sbs(b"b")
        + b"\x87R(K\x01" + i4(data.shape[0]) + i4(data.shape[1]) + b"\x86"
        + b"cnumpy\ndtype\n" + sbs(b"u1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + sbs(b"|") + b"NNN" + i4(-1) + i4(-1) + b"K\x00tb"
        + b"\x89T" + struct.pack("<I", data.nbytes) + data.tobytes() + b"tb"
    )  # fmt: skip
    labels_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(" + sbs(b"data") + array + sbs(b"labels") + labels_list + b"u."


def test_cifar10_python2_pickles(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    write_cifar(tmp_path, rng)
    data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    (tmp_path / "test_batch").write_bytes(py2_batch(data, [7, 0, 9]))
    ds = load_cifar10_folder(tmp_path)
    assert ds.y_test.tolist() == [7, 0, 9] and ds.x_test.shape == (3, 3, 32, 32)
    raw = torch.from_numpy(data.reshape(3, 3, 32, 32)).float()
    # an increasing affine map per channel of exactly these pixels: same stable order
    assert torch.equal(ds.x_test.argsort(dim=0, stable=True), raw.argsort(dim=0, stable=True))


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _Open:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


@pytest.mark.parametrize("evil", [_System, _Open])
@pytest.mark.parametrize("nested", [False, True], ids=["top", "nested"])
def test_cifar10_refuses_code(tmp_path: Path, evil: type, nested: bool) -> None:
    write_cifar(tmp_path, np.random.default_rng(8))
    marker = tmp_path / "pwned"
    payload = evil(marker)
    obj = {b"data": payload, b"labels": [0]} if nested else payload
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(PermcodecError, match="refusing to unpickle"):
        load_cifar10_folder(tmp_path)
    assert not marker.exists()


def test_cifar10_errors(tmp_path: Path) -> None:
    write_cifar(tmp_path, np.random.default_rng(9))
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(PermcodecError, match="lacks CIFAR-10 python batches: data_batch_3"):
        load_cifar10_folder(tmp_path)
    for bad in (
        b"not a pickle",
        pickle.dumps([1, 2, 3]),
        pickle.dumps({b"data": np.zeros((4, 10), np.uint8), b"labels": [0] * 4}),
        pickle.dumps({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}),
        pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}),
        pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}),
    ):
        (tmp_path / "data_batch_3").write_bytes(bad)
        with pytest.raises(PermcodecError):
            load_cifar10_folder(tmp_path)


# ---------------------------------------------------------------- digits, Fashion-MNIST


def test_digits() -> None:
    pytest.importorskip("sklearn")
    ds = load_digits()
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert (ds.in_channels, ds.image_size, ds.num_classes) == (1, 8, 10)
    assert ds.y_train.dtype == torch.int64
    assert int(ds.y_train.min()) == 0 and int(ds.y_train.max()) == 9
    assert set(ds.y_test.tolist()) <= set(range(10))
    again = load_dataset("digits")
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    assert abs(ds.x_train.mean().item()) < 1e-5


def test_digits_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(MissingDependencyError, match="pip install scikit-learn"):
        load_digits()


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist() -> None:
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert torch.equal(torch.bincount(ds.y_train), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(ds.y_test), torch.full((10,), 1000))


# ---------------------------------------------------------------- batches


def test_batches_cover_every_sample_once() -> None:
    x = torch.arange(103, dtype=torch.float32).reshape(103, 1, 1, 1)
    y = torch.arange(103)
    got = list(batches(x, y, 10, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b) for b, _ in got] == [10] * 10 + [3]
    xs = torch.cat([b for b, _ in got]).flatten()
    ys = torch.cat([b for _, b in got])
    assert torch.equal(xs.long(), ys)  # pairs stay together
    assert sorted(ys.tolist()) == list(range(103))
    assert not torch.equal(ys, y)  # shuffled

    def order(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([b for _, b in batches(x, y, 7, shuffle=True, generator=gen)]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    gen = torch.Generator().manual_seed(3)
    epochs = [
        torch.cat([b for _, b in batches(x, y, 16, shuffle=True, generator=gen)]) for _ in "ab"
    ]
    assert not torch.equal(epochs[0], epochs[1])  # the generator advances between epochs


def test_batches_in_order() -> None:
    x, y = torch.randn(5, 2), torch.arange(5)
    got = list(batches(x, y, 2, shuffle=False, generator=None))
    assert [b.tolist() for _, b in got] == [[0, 1], [2, 3], [4]]
    assert torch.equal(torch.cat([a for a, _ in got]), x)
    with pytest.raises(PermcodecError):
        list(batches(x, y, 0, shuffle=False, generator=None))
    with pytest.raises(PermcodecError):
        list(batches(x, y[:4], 2, shuffle=False, generator=None))
