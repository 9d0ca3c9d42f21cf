"""Kernels: compiled twins of the numpy reference (numba on the CPU, Triton on GPUs).

Each kernel module computes the same bits as the reference it shadows, faster; the
numpy code stays the oracle. :func:`load` is the one way in: it imports a kernel
module on first use and returns None where the reference should run instead: the
environment sets ``PERMCODEC_PURE_NUMPY=1``, the module's compiler (numba, triton) is not
installed (a decode-only install), or it is installed but broken, which warns once
(:class:`permcodec.KernelWarning`). Importing numba takes a few tenths of a second,
which ``import permcodec`` should not pay. This layer imports nothing of permcodec but
its errors.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

from ..errors import KernelWarning

#: Set to 1 to force the numpy reference code.
PURE_NUMPY_ENV = "PERMCODEC_PURE_NUMPY"
#: Kernel modules: name -> what runs without it.
MODULES = {
    "rans_numba": "the numpy reference coder",
    "philox_numba": "the numpy reference generator",
    "sync_numba": "torch's sort for LaPerm's sync",
    "rans_triton": "the CPU decoder, then a copy to the device",
}
#: Packages whose absence is a supported install, not a fault.
COMPILERS = ("numba", "llvmlite", "triton")
_loaded: dict[str, ModuleType | None] = {}


def pure_numpy() -> bool:
    """Whether the environment asks for the numpy reference everywhere."""
    return os.environ.get(PURE_NUMPY_ENV, "") not in ("", "0")


def load(name: str) -> ModuleType | None:
    """The kernel module ``permcodec.kernels.<name>``, or None if the reference runs."""
    if pure_numpy():
        return None
    if name not in _loaded:
        if name not in MODULES:
            raise KeyError(f"no kernel module {name!r}; known: {', '.join(MODULES)}")
        try:
            _loaded[name] = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            _loaded[name] = None
            if e.name not in COMPILERS:  # a broken install, not an absent compiler
                _warn(name, e)
        except Exception as e:  # a broken compiler: the reference computes the same bits
            _loaded[name] = None
            _warn(name, e)
    return _loaded[name]


def _warn(name: str, e: Exception) -> None:
    warnings.warn(
        f"permcodec kernels {name!r} unavailable ({type(e).__name__}: {e}); using "
        f"{MODULES[name]} instead, which gives the same bits more slowly "
        f"(set {PURE_NUMPY_ENV}=1 to choose it without this warning)",
        KernelWarning,
        stacklevel=3,
    )


def available(name: str) -> bool | None:
    """Whether ``permcodec.kernels.<name>`` loaded; None before the first use tried."""
    return None if name not in _loaded else _loaded[name] is not None
