"""Optional numba kernels, loaded on first use.

The numpy code is the reference; a kernel module (:mod:`permcodec.rans_fast`,
:mod:`permcodec.philox_fast`) computes the same bits faster. It is used unless numba is
missing or broken, or the environment sets ``PERMCODEC_PURE_NUMPY=1``. Importing numba
takes a few tenths of a second, which ``import permcodec`` should not pay.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

#: Set to 1 to force the numpy reference code.
PURE_NUMPY_ENV = "PERMCODEC_PURE_NUMPY"
_loaded: dict[str, ModuleType | None] = {}


def kernels(name: str) -> ModuleType | None:
    """The kernel module ``permcodec.<name>``, or None if the reference should run."""
    if os.environ.get(PURE_NUMPY_ENV, "") not in ("", "0"):
        return None
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(f"{__package__}.{name}")
        except Exception:  # no numba, or one that fails to load: use the reference
            _loaded[name] = None
    return _loaded[name]


def available(name: str) -> bool | None:
    """Whether ``permcodec.<name>`` loaded; None before the first use tried."""
    return None if name not in _loaded else _loaded[name] is not None
