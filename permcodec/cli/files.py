"""The file-to-file work behind the CLI's verbs: checkpoint -> `.perm` -> .pt/.safetensors/.npz.

Each output is written atomically and, unless ``overwrite`` is set, never over an
existing file.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.dtypes import FLOAT_DTYPES, STORAGE, TensorItem, as_float64, from_float32
from ..errors import FormatError, LossyWarning, PermcodecError, PlanError, require
from ..format import posthoc
from ..format.atomic import atomic_path
from ..format.reader import PermFile
from ..format.recode import bucket_depths, plan_depths
from ..format.writer import write_file

OUTPUT_FORMATS = (".pt", ".safetensors", ".npz")


class OutputExistsError(PermcodecError):
    """The output file exists and overwriting was not asked for."""


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse to write ``path`` where it exists (unless ``overwrite``) or its folder
    does not."""
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise PermcodecError(f"output folder {path.parent} does not exist")


def read_arrays(src: str | os.PathLike[str]) -> list[TensorItem]:
    """The tensors (name, storage array, dtype) of a ``.safetensors`` or ``.npz`` file;
    an ONNX file is refused in one line."""
    path = Path(src)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        raise FormatError(
            f"{path} is an ONNX model; permcodec encodes state dicts: export the weights "
            "with torch.save(model.state_dict(), 'weights.pt') or as .safetensors"
        )
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return [(n, *_array_item(n, z[n])) for n in z.files]
        except (ValueError, OSError) as e:
            raise FormatError(f"{path} is not a readable .npz file of arrays: {e}") from None
    return _read_safetensors(path)


def _array_item(name: str, a: np.ndarray) -> tuple[np.ndarray, str]:
    dtype = str(a.dtype)
    if dtype not in STORAGE or a.dtype.byteorder == ">":
        raise FormatError(f"array {name!r} has dtype {a.dtype}, which .perm files do not hold")
    return np.ascontiguousarray(a), dtype


def _read_safetensors(path: Path) -> list[TensorItem]:
    """The tensors of a .safetensors file (bfloat16 as its uint16 bits)."""
    st = require("safetensors", f"reading {path.name}", "safetensors")
    items = []
    try:
        with st.safe_open(str(path), framework="np") as f:
            names = list(f.keys())
            for n in names:
                items.append((n, *_array_item(n, f.get_tensor(n))))
    except (TypeError, ValueError) as e:  # bfloat16 has no numpy dtype
        if "bf16" not in str(e).lower() and "bfloat16" not in str(e).lower():
            raise FormatError(f"{path} is not a readable .safetensors file: {e}") from None
        pt = require("permcodec.torch", f"reading the bfloat16 tensors of {path.name}", "torch")
        stt = require("safetensors.torch", f"reading {path.name}", "safetensors")
        return [(n, *pt.to_numpy(t)) for n, t in stt.load_file(str(path)).items()]
    except Exception as e:  # safetensors' own errors on malformed files
        raise FormatError(f"{path} is not a readable .safetensors file: {e}") from None
    return items


def encode_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    overwrite: bool = False,
    bits: int | None = None,
    max_bytes: int | None = None,
    bpw: float | None = None,
    loss: Callable[[str, np.ndarray], float] | None = None,
    max_error: float | None = None,
    lossless: bool = False,
    key: str | None = None,
) -> dict[str, Any]:
    """Encode a model file into a `.perm` file and return its :meth:`PermFile.info`.

    A model seeded by ``permcodec.init`` (a torch checkpoint with a plan) is stored
    losslessly, as rank buckets with ``bits``, or within ``bpw``; any other model (or a
    seeded one whose tensors left their init, given ``bpw`` or ``max_error``) has its
    weight matrices put on grids (:mod:`permcodec.format.posthoc`): within ``bpw`` bits
    per weight, each within relative error ``max_error``, or each within the default
    error when neither is given; ``lossless`` stores it exactly. A `.perm` input is
    re-coded (:func:`recode_file`)."""
    if Path(src).suffix == ".perm":
        if max_error is not None or lossless:
            raise PermcodecError(f"{src} is already a .perm file; re-code it with bpw= or bits=")
        return recode_file(src, dst, overwrite, bits, bpw, max_bytes, loss)
    dst = Path(dst)
    check_target(dst, overwrite)
    suffix = Path(src).suffix.lower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LossyWarning)  # the caller reports from info
        if suffix in (".safetensors", ".npz", ".onnx"):  # no plan, no torch needed
            if bits is not None:
                raise PlanError(NO_PLAN_BITS.format(src=src))
            items = read_arrays(src)
            posthoc.write_trained(dst, items, _metadata(), bpw, max_error, lossless)
        else:
            pt = require("permcodec.torch", f"reading {Path(src).name}", "torch")
            sd, plan = pt.load_checkpoint(src, key)
            if plan is None and bits is not None:
                raise PlanError(NO_PLAN_BITS.format(src=src))
            if plan is None and bpw is None and max_error is None and not lossless:
                max_error = posthoc.DEFAULT_MAX_ERROR
            pt.save(sd, dst, plan=plan, bits=bits, bpw=bpw, max_error=max_error,
                    lossless=lossless)  # fmt: skip
    with PermFile(dst, max_bytes=max_bytes) as pf:
        return pf.info()


NO_PLAN_BITS = (
    "{src} was not trained by permutation (it has no plan): bits= keeps the rank buckets "
    "of LaPerm models; give bpw= (a size) or max_error= (a relative error)"
)


def _metadata() -> dict[str, str]:
    from ..core.version import __version__

    return {"permcodec_version": __version__}


def recode_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    overwrite: bool = False,
    bits: int | None = None,
    bpw: float | None = None,
    max_bytes: int | None = None,
    loss: Callable[[str, np.ndarray], float] | None = None,
) -> dict[str, Any]:
    """Write the tensors of the `.perm` file ``src`` again, its seeded matrices at
    ``bits`` rank buckets or within ``bpw`` bits per weight (no torch needed), losing
    the least error or what ``loss`` measures (:func:`plan_depths`); returns the new
    file's :meth:`PermFile.info`."""
    if bits is None and bpw is None:
        raise PermcodecError(
            f"{src} is already a .perm file; to make it smaller, give bpw= (a target "
            "size) or bits= (a bucket depth)"
        )
    dst = Path(dst)
    check_target(dst, overwrite)
    if dst.exists() and dst.resolve() == Path(src).resolve():
        raise PermcodecError(f"{dst} is the input; write the re-coded file elsewhere")
    with PermFile(src, max_bytes=max_bytes) as pf:
        plan = pf.plan()
        items = [(n, pf.tensor(n), pf.entry(n).dtype) for n in pf]
        meta = pf.metadata
        lossy = [n for n in pf if pf.entry(n).seeded and not pf.entry(n).codec.lossless(
            pf.entry(n).params)]  # fmt: skip
    if lossy:
        raise PermcodecError(
            f"{src} already holds rank buckets only ({', '.join(lossy[:3])}); re-code a "
            "lossless file"
        )
    if plan is None:
        raise PlanError(f"{src} has no seeded tensors to re-code")
    tensor_bits = {}
    if bpw is not None:
        tensor_bits = bucket_depths(plan_depths(items, plan, bpw, loss=loss))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LossyWarning)  # the caller reports from info
        write_file(dst, items, plan, meta, bits=bits, tensor_bits=tensor_bits)
    with PermFile(dst, max_bytes=max_bytes) as pf:
        return pf.info()


#: Dtypes ``decode`` can convert floating-point tensors to on the way out.
OUTPUT_DTYPES = ("float32", "float16", "bfloat16")
#: What a .npz output says when it holds bfloat16 tensors (numpy has no such dtype).
BFLOAT16_NPZ = (
    ".npz has no bfloat16: {n} bfloat16 tensor(s) ({first}, ...) are stored as their uint16 "
    "bit patterns; read them with ml_dtypes (a.view(ml_dtypes.bfloat16)), or write "
    ".safetensors or .pt"
)


def decode_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    device: str = "cpu",
    overwrite: bool = False,
    max_bytes: int | None = None,
    dtype: str | None = None,
) -> int:
    """Decode a `.perm` file into .pt, .safetensors or .npz (chosen by suffix).

    Returns the number of tensors written. ``device`` is where decoding runs (``cuda``
    needs torch with a GPU); files always hold CPU tensors. ``dtype`` converts every
    floating-point tensor (round to nearest even, through float32). torch is imported
    only for .pt output or another device; .safetensors files are written a tensor at a
    time, as they decode.
    """
    dst = Path(dst)
    fmt = dst.suffix.lower()
    if fmt not in OUTPUT_FORMATS:
        raise PermcodecError(
            f"cannot write {dst.name}: output must end in one of {', '.join(OUTPUT_FORMATS)}"
        )
    if dtype is not None and dtype not in OUTPUT_DTYPES:
        raise PermcodecError(f"dtype {dtype!r} is not one of {', '.join(OUTPUT_DTYPES)}")
    check_target(dst, overwrite)
    if fmt == ".safetensors" and device == "cpu":
        return _stream_safetensors(src, dst, max_bytes, dtype)
    if fmt == ".npz" and device == "cpu":  # bfloat16 as its uint16 bits, and a warning
        arrays = _converted(src, max_bytes, dtype)
        with atomic_path(dst) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{k: a for k, (a, _) in arrays.items()})
        bf16 = [k for k, (_, dt) in arrays.items() if dt == "bfloat16"]
        if bf16:
            warnings.warn(BFLOAT16_NPZ.format(n=len(bf16), first=bf16[0]), stacklevel=2)
        return len(arrays)
    why = "writing .pt files" if fmt == ".pt" else f"decoding on {device}"
    pt = require("permcodec.torch", why, "torch")
    import torch

    dev = pt.device_of(device)
    sd = {k: v.cpu() for k, v in pt.load(src, device=dev, max_bytes=max_bytes).items()}
    if dtype is not None:
        target = pt.torch_dtype(dtype)
        sd = {k: v.float().to(target) if v.is_floating_point() else v for k, v in sd.items()}
    with atomic_path(dst) as tmp:
        if fmt == ".pt":
            torch.save(sd, tmp)
        else:
            st = require("safetensors.torch", "writing .safetensors files", "safetensors")
            st.save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp))
    return len(sd)


def _converted(
    src: str | os.PathLike[str], max_bytes: int | None, dtype: str | None
) -> dict[str, tuple[np.ndarray, str]]:
    """Every tensor of ``src`` as (numpy storage array, dtype name), floating-point ones
    converted to ``dtype`` (bfloat16 as uint16 bits)."""
    with PermFile(src, max_bytes=max_bytes) as pf:
        return {name: _convert(pf.storage(name), pf.entry(name).dtype, dtype) for name in pf}


def _convert(a: np.ndarray, dt: str, dtype: str | None) -> tuple[np.ndarray, str]:
    """A storage array of dtype ``dt`` converted to ``dtype`` when both are floating
    point (round to nearest even, through float32), and its dtype name."""
    if dtype is None or dt not in FLOAT_DTYPES or dt == dtype:
        return a, dt
    return from_float32(as_float64(a, dt).astype(np.float32), dtype), dtype


#: The dtype names of the safetensors format.
SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}  # fmt: skip


def _stream_safetensors(
    src: str | os.PathLike[str], dst: Path, max_bytes: int | None, dtype: str | None
) -> int:
    """Write ``src``'s tensors to the .safetensors file ``dst`` as they decode: the
    header first (every shape and dtype is in the `.perm` header), then each tensor's
    bytes, so memory stays near one tensor whatever the file holds."""
    with PermFile(src, max_bytes=max_bytes) as pf:
        names = list(pf)
        header, offset = {}, 0
        for name in names:
            e = pf.entry(name)
            dt = dtype if dtype is not None and e.dtype in FLOAT_DTYPES else e.dtype
            size = e.numel * STORAGE[dt].itemsize
            header[name] = {
                "dtype": SAFETENSORS_DTYPES[dt],
                "shape": list(e.shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with atomic_path(dst) as tmp, open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            for name, a in pf.tensors():
                a, _ = _convert(np.ascontiguousarray(a), pf.entry(name).dtype, dtype)
                f.write(memoryview(a.view(np.uint8).reshape(-1)))
    return len(names)
