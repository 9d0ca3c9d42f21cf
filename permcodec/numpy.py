"""permcodec for numpy: read and write `.perm` files without torch.

bfloat16 tensors come back as ``ml_dtypes.bfloat16`` arrays when ml_dtypes is
installed, otherwise as their uint16 bit patterns.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

from .core.dtypes import STORAGE
from .core.plan import Plan
from .errors import PermcodecError
from .format.reader import PermFile, Source
from .format.recode import bucket_depths, plan_depths
from .format.writer import write_file

_NUMPY_TO_NAME = {np.dtype(v).newbyteorder("="): k for k, v in STORAGE.items() if k != "bfloat16"}


def dtype_name(a: np.ndarray) -> str:
    """Format dtype name of a numpy array (ml_dtypes.bfloat16 is 'bfloat16')."""
    if a.dtype.name == "bfloat16":
        return "bfloat16"
    try:
        return _NUMPY_TO_NAME[a.dtype.newbyteorder("=")]
    except KeyError:
        raise PermcodecError(f"dtype {a.dtype} is not supported by the .perm format") from None


def load(path: Source, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Decode every tensor of a `.perm` file (a path, its bytes or a binary file object)
    into numpy arrays, verifying all checksums; bfloat16 as ``ml_dtypes.bfloat16``
    where installed. ``max_bytes`` caps the decoded size the file may claim
    (:mod:`permcodec.format.limits`)."""
    with PermFile(path, max_bytes=max_bytes) as pf:
        out = dict(pf.tensors())
        out.update({alias: out[name] for alias, name in pf.aliases().items()})
        return out


def save(
    tensors: dict[str, np.ndarray],
    path: str | os.PathLike[str] | BinaryIO,
    plan: Plan | dict | None,
    metadata: dict[str, str] | None = None,
    bits: int | dict[str, int] | None = None,
    bpw: float | None = None,
) -> None:
    """Encode numpy arrays into `.perm`; the tensors named by ``plan`` must be seeded.

    ``bits`` stores seeded tensors as rank buckets only (lossy, warned): one depth for
    all, or a depth per tensor name. ``bpw`` chooses those depths so that the weight
    matrices cost at most that many bits per weight, container included
    (:mod:`permcodec.format.recode`).
    """
    if isinstance(plan, dict):
        plan = Plan.from_dict(plan)
    items = []
    for name, a in tensors.items():
        a = np.asarray(a)
        name_dt = dtype_name(a)
        if name_dt == "bfloat16":
            a = a.view(np.uint16)
        items.append((name, a, name_dt))
    if bpw is not None:
        if plan is None or bits is not None:
            raise PermcodecError("bpw= needs a plan and no bits=")
        bits = bucket_depths(plan_depths(items, plan, bpw))
    if isinstance(bits, dict):
        write_file(path, items, plan, metadata, tensor_bits=bits)
    else:
        write_file(path, items, plan, metadata, bits=bits)
