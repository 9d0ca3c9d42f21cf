"""Kernels: compiled twins of the numpy reference (C of csrc/ wrapped by Cython at install,
Triton on GPUs).

Each kernel module computes the same bits as the reference it shadows, faster; the
numpy code stays the oracle. :func:`load` is the one way in: it imports a kernel
module on first use and returns None where the reference should run instead: the
environment sets ``PERMCODEC_PURE_NUMPY=1``, the module's compiler (triton) is not
installed or its extension was not built (an install without a C compiler), or it is
there but broken, which warns once (:class:`permcodec.KernelWarning`). A family name
("rans", "philox") gives its member that loads: the C kernels, which need no runtime
beyond numpy and start at once (a wheel, ``pip wheel .``, carries them to machines
without a compiler). Modules load on first use, so ``import permcodec`` pays for none of
them. This layer imports nothing of permcodec but its errors.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import Any

from ..errors import KernelWarning

#: Set to 1 to force the numpy reference code.
PURE_NUMPY_ENV = "PERMCODEC_PURE_NUMPY"
#: Set to a comma-separated list of backends ("c") to allow only those.
BACKENDS_ENV = "PERMCODEC_KERNELS"
#: Kernel modules: name -> what runs without it.
MODULES = {
    "rans_c": "the numpy reference coder",
    "philox_c": "the numpy reference generator",
    "grid_c": "the numpy reference static-table coder",
    "seeded_c": "the seeded decoders of permcodec.coding (numpy, with the rans kernels)",
    "sync_c": "torch's sort for LaPerm's sync",
    "rans_triton": "the CPU decoder, then a copy to the device",
}
#: Families: name -> members, fastest first; each member's name ends in its backend.
FAMILIES = {"rans": ("rans_c",), "philox": ("philox_c",)}
#: Packages whose absence is a supported install, not a fault.
COMPILERS = ("triton",)
#: Extensions built at install where a C compiler was found; their absence is supported.
EXTENSIONS = ("rans_c", "philox_c", "grid_c", "seeded_c", "sync_c")
#: The interface version the extensions must report (their ``API``): an extension built
#: from older sources (a stale in-place build) is refused with a warning.
EXTENSION_API = 3
_loaded: dict[str, ModuleType | None] = {}
_hosts: dict[str, Any] = {}


def pure_numpy() -> bool:
    """Whether the environment asks for the numpy reference everywhere."""
    return os.environ.get(PURE_NUMPY_ENV, "") not in ("", "0")


def backends() -> tuple[str, ...] | None:
    """The backends the environment allows (:data:`BACKENDS_ENV`), or None for all;
    names it does not know are dropped with one warning."""
    chosen = os.environ.get(BACKENDS_ENV, "").strip()
    if not chosen:
        return None
    names = tuple(b.strip() for b in chosen.split(",") if b.strip())
    known = {member.rsplit("_", 1)[1] for members in FAMILIES.values() for member in members}
    if unknown := [b for b in names if b not in known]:
        _warn_once(
            f"{BACKENDS_ENV}={chosen!r} names unknown backend(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return tuple(b for b in names if b in known)


def load(name: str) -> Any:
    """The kernel module ``permcodec.kernels.<name>``, or None if the reference runs.

    For the family "rans" the result is a :class:`~.rans_host.RansKernels` over the
    fastest member that loads; for "philox" that member's module.
    """
    if pure_numpy():
        return None
    if name in FAMILIES:
        allowed = backends()
        for member in FAMILIES[name]:
            if allowed is not None and member.rsplit("_", 1)[1] not in allowed:
                continue
            if (module := load(member)) is not None:
                return _host(name, module)
        if allowed:
            _warn_once(
                f"{BACKENDS_ENV} allows only {', '.join(allowed)}, which cannot run {name!r} "
                "here; using the numpy reference"
            )
        return None
    if name not in _loaded:
        if name not in MODULES:
            known = ", ".join([*FAMILIES, *MODULES])
            raise KeyError(f"no kernel module {name!r}; known: {known}")
        try:
            module = importlib.import_module(f"{__name__}.{name}")
            if name in EXTENSIONS and getattr(module, "API", None) != EXTENSION_API:
                raise ImportError(
                    f"built for kernel interface {getattr(module, 'API', None)}, not "
                    f"{EXTENSION_API}: rebuild it (pip install -e . or python setup.py "
                    "build_ext --inplace)"
                )
            _loaded[name] = module
        except ModuleNotFoundError as e:
            _loaded[name] = None
            absent = e.name in COMPILERS or (name in EXTENSIONS and e.name == f"{__name__}.{name}")
            if not absent:  # a broken install, not an absent compiler or build
                _warn(name, e)
        except Exception as e:  # a broken compiler: the reference computes the same bits
            _loaded[name] = None
            _warn(name, e)
    return _loaded[name]


def _host(family: str, module: ModuleType) -> Any:
    """What :func:`load` gives for a family's member ``module`` (made once)."""
    if family != "rans":
        return module
    key = f"{module.__name__}:host"
    if key not in _hosts:
        from .rans_host import RansKernels

        _hosts[key] = RansKernels(module)
    return _hosts[key]


def _warn(name: str, e: Exception) -> None:
    _warn_once(
        f"permcodec kernels {name!r} unavailable ({type(e).__name__}: {e}); using "
        f"{MODULES[name]} instead, which gives the same bits more slowly "
        f"(set {PURE_NUMPY_ENV}=1 to choose it without this warning)"
    )


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A :class:`KernelWarning`, once per message, attributed to the code outside
    permcodec that led here."""
    if message in _warned:
        return
    _warned.add(message)
    warnings.warn(message, KernelWarning, stacklevel=_outside_stacklevel())


def _outside_stacklevel() -> int:
    """The stacklevel of the first frame outside the permcodec package."""
    import sys

    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("permcodec"):
        frame, level = frame.f_back, level + 1
    return level


def available(name: str) -> bool | None:
    """Whether ``permcodec.kernels.<name>`` loaded; None before the first use tried."""
    return None if name not in _loaded else _loaded[name] is not None
