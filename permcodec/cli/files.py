"""The file-to-file work behind the CLI's verbs: checkpoint -> `.perm` -> .pt/.safetensors/.npz.

Each output is written atomically and, unless ``overwrite`` is set, never over an
existing file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LossyWarning, PermcodecError, PlanError
from ..format.atomic import atomic_path
from ..format.reader import PermFile
from ..format.recode import bucket_depths, plan_depths
from ..format.writer import write_file
from ..numpy import load as load_numpy

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


def encode_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    overwrite: bool = False,
    bits: int | None = None,
    approximate: bool = False,
    seed: int = 0,
    max_bytes: int | None = None,
    bpw: float | None = None,
) -> tuple[dict[str, Any], list[Any]]:
    """Encode a permcodec checkpoint (``save_checkpoint``), or with ``approximate``
    any state dict, into a `.perm` file (rank buckets only with ``bits``; at most
    ``bpw`` bits per weight with ``bpw``); returns the file's :meth:`PermFile.info`
    and the approximation report. A `.perm` input is re-coded (:func:`recode_file`)."""
    if Path(src).suffix == ".perm":
        if approximate:
            raise PermcodecError(f"{src} is already a .perm file: approximate=True needs a .pt")
        return recode_file(src, dst, overwrite, bits, bpw, max_bytes), []
    from .. import torch as pt

    dst = Path(dst)
    check_target(dst, overwrite)
    sd, plan = pt.load_checkpoint(src)
    if plan is None and not approximate:
        raise PlanError(
            f"{src} has no permcodec plan; write it with "
            "permcodec.save_checkpoint(model, path) after permcodec.init(model, seed), "
            "or encode it with approximate=True to store a model trained without LaPerm "
            "approximately"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LossyWarning)  # the caller reports from info
        report = pt.save(sd, dst, plan=plan, bits=bits, approximate=approximate, seed=seed, bpw=bpw)
    with PermFile(dst, max_bytes=max_bytes) as pf:
        return pf.info(), report


def recode_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    overwrite: bool = False,
    bits: int | None = None,
    bpw: float | None = None,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """Write the tensors of the `.perm` file ``src`` again, its seeded matrices at
    ``bits`` rank buckets or within ``bpw`` bits per weight (no torch needed);
    returns the new file's :meth:`PermFile.info`."""
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
        tensor_bits = bucket_depths(plan_depths(items, plan, bpw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LossyWarning)  # the caller reports from info
        write_file(dst, items, plan, meta, bits=bits, tensor_bits=tensor_bits)
    with PermFile(dst, max_bytes=max_bytes) as pf:
        return pf.info()


def decode_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    device: str = "cpu",
    overwrite: bool = False,
    max_bytes: int | None = None,
) -> int:
    """Decode a `.perm` file into .pt, .safetensors or .npz (chosen by suffix).

    Returns the number of tensors written. ``device`` is where decoding runs
    (``cuda`` needs torch with a GPU); files always hold CPU tensors.
    """
    dst = Path(dst)
    fmt = dst.suffix.lower()
    if fmt not in OUTPUT_FORMATS:
        raise PermcodecError(
            f"cannot write {dst.name}: output must end in one of {', '.join(OUTPUT_FORMATS)}"
        )
    check_target(dst, overwrite)
    if fmt == ".npz":
        arrays = load_numpy(src, max_bytes=max_bytes)
        arrays = {
            k: (a.view(np.uint16) if a.dtype.name == "bfloat16" else a) for k, a in arrays.items()
        }
        with atomic_path(dst) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return len(arrays)
    try:
        from .. import torch as pt
    except ImportError:
        pt = None
    if pt is None:
        if fmt == ".pt" or device != "cpu":
            raise PermcodecError(
                f"writing {fmt} files or decoding on {device} needs torch; "
                "install it, or decode to .npz"
            )
        from safetensors.numpy import save_file as save_np

        arrays = load_numpy(src, max_bytes=max_bytes)
        if any(a.dtype.name == "bfloat16" for a in arrays.values()):
            raise PermcodecError("bfloat16 tensors need torch to be written as .safetensors")
        with atomic_path(dst) as tmp:
            save_np(arrays, str(tmp))
        return len(arrays)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise PermcodecError(f"device {device!r} was asked for, but torch sees no CUDA device")
    sd = {k: v.cpu() for k, v in pt.load(src, device=device, max_bytes=max_bytes).items()}
    with atomic_path(dst) as tmp:
        if fmt == ".pt":
            import torch

            torch.save(sd, tmp)
        else:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp))
    return len(sd)
