"""Comparison codecs for the rate-distortion benchmark.

Every entry of ``BASELINES`` is a function ``f(state, weight_names) -> (decoded_state, bits)``:
it encodes the tensors named in ``weight_names`` to real bytes, decodes them back from those
bytes, and returns the decoded state dict (every key of ``state``; tensors not in
``weight_names`` are passed through unchanged) and the exact size of the encoded bytes in bits,
side information (scales, codebooks, frame headers) included. Tensor names, shapes and dtypes
are taken as known to the decoder (they come with the architecture) and are not counted, except
by NNCodec, whose bitstream carries them itself.

NNCodec (``pip install nncodec``, the ISO/IEC 15938-17 reference software) is optional: when it
cannot be imported or fails a tiny self-test, ``NNCODEC_ERROR`` says why and its entries raise
``RuntimeError("nncodec unavailable: ...")``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import zstandard

Codec = Callable[[dict[str, torch.Tensor], list[str]], tuple[dict[str, torch.Tensor], int]]

ZSTD_LEVEL = 19
QUANTILE_LEVELS = 16
NNCODEC_QPS = (-44, -38, -32, -26, -20, -14, -8, -2)


# ---------------------------------------------------------------------------------------------
# Shared plumbing


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """Return a C-contiguous float32 numpy copy of a tensor, on the CPU."""
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


def _zstd_compress(blob: bytes) -> bytes:
    """Compress one blob as a single zstd frame at ``ZSTD_LEVEL``."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(blob)


def _zstd_decompress(frame: bytes) -> bytes:
    """Decompress one zstd frame (the frame header records the content size)."""
    return zstandard.ZstdDecompressor().decompress(frame)


def _per_tensor_codec(
    encode: Callable[[np.ndarray], bytes],
    decode: Callable[[bytes, tuple[int, ...]], np.ndarray],
) -> Codec:
    """Build a state-dict codec that encodes each weight tensor to its own byte string.

    ``decode`` gets only the bytes and the shape, so the reconstruction comes from the bytes.
    """

    def codec(
        state: dict[str, torch.Tensor], weight_names: list[str]
    ) -> tuple[dict[str, torch.Tensor], int]:
        decoded = dict(state)
        bits = 0
        for name in weight_names:
            ref = state[name]
            blob = encode(_to_numpy(ref))
            bits += 8 * len(blob)
            arr = decode(blob, tuple(ref.shape))
            decoded[name] = torch.from_numpy(arr).to(ref.device)
        return decoded, bits

    return codec


def _with_zstd(
    encode: Callable[[np.ndarray], bytes],
    decode: Callable[[bytes, tuple[int, ...]], np.ndarray],
) -> Codec:
    """Like ``_per_tensor_codec`` but with each tensor's bytes wrapped in one zstd frame."""
    return _per_tensor_codec(
        lambda w: _zstd_compress(encode(w)),
        lambda frame, shape: decode(_zstd_decompress(frame), shape),
    )


# ---------------------------------------------------------------------------------------------
# float32 / float16


def _f32_encode(w: np.ndarray) -> bytes:
    """Raw little-endian float32 bytes."""
    return w.astype("<f4").tobytes()


def _f32_decode(blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``_f32_encode``."""
    return np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(shape)


def _f16_encode(w: np.ndarray) -> bytes:
    """Raw little-endian float16 bytes (round to nearest even)."""
    return w.astype("<f2").tobytes()


def _f16_decode(blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Float16 bytes back to float32 (exact widening)."""
    return np.frombuffer(blob, dtype="<f2").astype(np.float32).reshape(shape)


# ---------------------------------------------------------------------------------------------
# int8, symmetric, one float32 scale per output channel (dim 0)


def _int8_encode(w: np.ndarray) -> bytes:
    """Layout: ``C*K`` int8 codes (row-major, C = dim 0) then ``C`` float32 scales."""
    rows = w.reshape(w.shape[0], -1)
    amax = np.abs(rows).max(axis=1)
    scale = (amax / np.float32(127.0)).astype(np.float32)
    scale[scale == 0] = np.float32(1.0)  # an all-zero channel codes as zeros with any scale
    codes = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8)
    return codes.tobytes() + scale.astype("<f4").tobytes()


def _int8_decode(blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``_int8_encode``: ``code * scale`` in float32."""
    channels = shape[0]
    numel = int(np.prod(shape))
    codes = np.frombuffer(blob, dtype=np.int8, count=numel).reshape(channels, -1)
    scale = np.frombuffer(blob, dtype="<f4", count=channels, offset=numel)
    return (codes.astype(np.float32) * scale.astype(np.float32)[:, None]).reshape(shape)


def _int4_encode(w: np.ndarray) -> bytes:
    """Layout: ``C*K`` 4-bit codes in [-7, 7] (offset by 8, two per byte, the first in the
    low nibble; an odd count padded with a zero nibble) then ``C`` float32 scales."""
    rows = w.reshape(w.shape[0], -1)
    scale = (np.abs(rows).max(axis=1) / np.float32(7.0)).astype(np.float32)
    scale[scale == 0] = np.float32(1.0)
    codes = (np.clip(np.rint(rows / scale[:, None]), -7, 7) + 8).astype(np.uint8).reshape(-1)
    if codes.size % 2:
        codes = np.append(codes, np.uint8(0))
    packed = (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8)
    return packed.tobytes() + scale.astype("<f4").tobytes()


def _int4_decode(blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``_int4_encode``: ``(code - 8) * scale`` in float32."""
    channels, numel = shape[0], int(np.prod(shape))
    packed = np.frombuffer(blob, dtype=np.uint8, count=(numel + 1) // 2)
    codes = np.empty(2 * packed.size, dtype=np.int16)
    codes[0::2], codes[1::2] = packed & 0x0F, packed >> 4
    scale = np.frombuffer(blob, dtype="<f4", count=channels, offset=packed.size)
    values = (codes[:numel] - 8).astype(np.float32).reshape(channels, -1)
    return (values * scale.astype(np.float32)[:, None]).reshape(shape)


# ---------------------------------------------------------------------------------------------
# 4-bit, per-tensor codebook at the 16 quantiles (k + 0.5) / 16


def _quantile_encode(w: np.ndarray) -> bytes:
    """Layout: 16 float32 codebook values, then the 4-bit indices packed two per byte.

    Each weight takes the nearest codebook entry; index i goes in the low nibble of byte i // 2
    when i is even, the high nibble when odd; an odd count is padded with a zero nibble.
    """
    flat = w.reshape(-1)
    probs = (np.arange(QUANTILE_LEVELS) + 0.5) / QUANTILE_LEVELS
    codebook = np.quantile(flat.astype(np.float64), probs).astype(np.float32)
    cb64 = codebook.astype(np.float64)
    # codebook is sorted, so nearest = bucket between consecutive midpoints
    idx = np.searchsorted((cb64[:-1] + cb64[1:]) / 2.0, flat.astype(np.float64), side="left")
    idx = idx.astype(np.uint8)
    if idx.size % 2:
        idx = np.append(idx, np.uint8(0))
    packed = (idx[0::2] | (idx[1::2] << 4)).astype(np.uint8)
    return codebook.astype("<f4").tobytes() + packed.tobytes()


def _quantile_decode(blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``_quantile_encode``: look the unpacked indices up in the codebook."""
    numel = int(np.prod(shape))
    codebook = np.frombuffer(blob, dtype="<f4", count=QUANTILE_LEVELS).astype(np.float32)
    packed = np.frombuffer(blob, dtype=np.uint8, offset=4 * QUANTILE_LEVELS)
    idx = np.empty(2 * packed.size, dtype=np.uint8)
    idx[0::2] = packed & 0x0F
    idx[1::2] = packed >> 4
    return codebook[idx[:numel]].reshape(shape)


# ---------------------------------------------------------------------------------------------
# NNCodec

# Third-party packages that nncodec imports only for its training / dataset framework, never
# on the compress / decompress path used here. Missing or broken ones (torchvision often does
# not import with a CPU-only torch build) are replaced by inert stubs while nncodec is imported.
_NNCODEC_OPTIONAL_DEPS = (
    "torchvision",
    "cv2",
    "pandas",
    "h5py",
    "torchmetrics",
    "ptflops",
    "wandb",
    "flwr",
    "sentencepiece",
    "tensorflow",
)


class _StubMeta(type):
    """Metaclass of stub attributes: any attribute of a stub class is another stub class."""

    def __getattr__(cls, name: str) -> Any:
        """Return a fresh stub class for any non-dunder attribute."""
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub_class(name)


def _stub_class(name: str) -> type:
    """A class that can be subclassed, instantiated with any arguments, and has any attribute."""
    return _StubMeta(name, (), {"__init__": lambda self, *args, **kwargs: None})


class _StubModule(types.ModuleType):
    """A module whose every non-dunder attribute is a stub class."""

    def __getattr__(self, name: str) -> Any:
        """Return a stub class for any non-dunder attribute."""
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub_class(name)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Meta-path finder that answers imports of the given top-level packages with stubs."""

    def __init__(self, packages: frozenset[str]) -> None:
        """Stub ``packages`` and all their submodules."""
        self.packages = packages

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        """Claim the module if its top-level package is one to stub."""
        if fullname.split(".", 1)[0] in self.packages:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        """Create an empty stub package."""
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to execute in a stub."""


def _import_nncodec() -> Any:
    """Import ``nncodec.nnc`` with its unused heavy dependencies stubbed, then drop the stubs.

    Packages already in ``sys.modules`` are used as they are; the stubs are removed from
    ``sys.modules`` afterwards so that later imports elsewhere in the process are unaffected.
    """
    if "nncodec.nnc" in sys.modules:
        return sys.modules["nncodec.nnc"]
    to_stub = frozenset(p for p in _NNCODEC_OPTIONAL_DEPS if p not in sys.modules)
    finder = _StubFinder(to_stub)
    sys.meta_path.insert(0, finder)
    try:
        from nncodec import nnc
    except BaseException:
        for key in [k for k in sys.modules if k == "nncodec" or k.startswith("nncodec.")]:
            del sys.modules[key]
        raise
    finally:
        sys.meta_path.remove(finder)
        for key in [k for k, m in sys.modules.items() if isinstance(m, _StubModule)]:
            del sys.modules[key]
    return nnc


def _nncodec_version() -> str:
    """Installed NNCodec version, or ``"unknown"``."""
    try:
        from importlib.metadata import version

        return version("nncodec")
    except Exception:
        return "unknown"


def _short(exc: BaseException, limit: int = 300) -> str:
    """One-line, length-limited description of an exception."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _nncodec_compress(nnc: Any, arrays: dict[str, np.ndarray], qp: int) -> bytes:
    """Encode ``arrays`` (float32, dim >= 2) into one NNC bitstream at quantization parameter qp."""
    try:
        bitstream = nnc.compress(
            arrays, bitstream_path=None, qp=int(qp), return_bitstream=True, verbose=False
        )
    except SystemExit as exc:  # nncodec reports its errors by raising SystemExit
        raise RuntimeError(f"nncodec compress failed: {_short(exc)}") from None
    return bytes(bitstream)


def _nncodec_decompress(nnc: Any, bitstream: bytes) -> dict[str, np.ndarray]:
    """Decode an NNC bitstream back to a dict of float32 arrays."""
    try:
        return nnc.decompress(bytearray(bitstream), verbose=False)
    except SystemExit as exc:
        raise RuntimeError(f"nncodec decompress failed: {_short(exc)}") from None


def _probe_nncodec() -> tuple[Any, str | None]:
    """Import NNCodec and round-trip a tiny tensor; return (module or None, error or None)."""
    try:
        nnc = _import_nncodec()
        probe = {"probe.weight": np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(4, 6)}
        out = _nncodec_decompress(nnc, _nncodec_compress(nnc, probe, -32))
        got = out["probe.weight"]
        if got.shape != (4, 6) or float(np.abs(got - probe["probe.weight"]).max()) > 0.05:
            return None, "self-test round trip gave a wrong reconstruction"
        return nnc, None
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        return None, _short(exc)


_NNC, NNCODEC_ERROR = _probe_nncodec()
NNCODEC_VERSION: str | None = _nncodec_version() if _NNC is not None else None


def _require_nncodec() -> Any:
    """Return the nncodec module or raise ``RuntimeError("nncodec unavailable: ...")``."""
    if _NNC is None:
        raise RuntimeError(f"nncodec unavailable: {NNCODEC_ERROR}")
    return _NNC


def nncodec_roundtrip(
    arrays: dict[str, np.ndarray], qp: int
) -> tuple[dict[str, np.ndarray], int, float, float]:
    """Encode ``arrays`` into one NNC bitstream at ``qp`` and decode it back.

    Returns (decoded arrays, bitstream length in bytes, encode seconds, decode seconds).
    """
    nnc = _require_nncodec()
    inputs = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in arrays.items()}
    t0 = time.perf_counter()
    bitstream = _nncodec_compress(nnc, inputs, qp)
    t1 = time.perf_counter()
    decoded = _nncodec_decompress(nnc, bitstream)
    t2 = time.perf_counter()
    return decoded, len(bitstream), t1 - t0, t2 - t1


def nncodec_at(qp: int) -> Codec:
    """A state-dict codec: all weight tensors in one NNCodec bitstream at quantization qp.

    The step size is absolute (about 2 ** (qp / 4) with NNCodec's default qp_density of 2).
    """

    def codec(
        state: dict[str, torch.Tensor], weight_names: list[str]
    ) -> tuple[dict[str, torch.Tensor], int]:
        arrays = {name: _to_numpy(state[name]) for name in weight_names}
        out, nbytes, _, _ = nncodec_roundtrip(arrays, qp)
        decoded = dict(state)
        for name in weight_names:
            ref = state[name]
            arr = np.asarray(out[name], dtype=np.float32).reshape(tuple(ref.shape))
            decoded[name] = torch.from_numpy(arr).to(ref.device)
        return decoded, 8 * nbytes

    codec.__name__ = f"nncodec_qp{qp}"
    return codec


# ---------------------------------------------------------------------------------------------
# Registry

BASELINES: dict[str, Codec] = {
    "float32+zstd": _with_zstd(_f32_encode, _f32_decode),
    "float16": _per_tensor_codec(_f16_encode, _f16_decode),
    "int8": _per_tensor_codec(_int8_encode, _int8_decode),
    "int8+zstd": _with_zstd(_int8_encode, _int8_decode),
    "int4+zstd": _with_zstd(_int4_encode, _int4_decode),
    "4bit-quantile": _per_tensor_codec(_quantile_encode, _quantile_decode),
    "4bit-quantile+zstd": _with_zstd(_quantile_encode, _quantile_decode),
    **{f"nncodec qp={qp}": nncodec_at(qp) for qp in NNCODEC_QPS},
}
