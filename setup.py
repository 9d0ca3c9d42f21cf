"""Build the compiled decode kernels (optional: without a C compiler the package
installs without them and the numpy reference, or torch's sort for LaPerm's sync, runs
instead)."""

import sys

from setuptools import Extension, setup

# gcc/clang: optimise; signed overflow wraps as in numpy (-fwrapv: on hostile
# input the kernels must compute what their twins compute, not undefined behaviour); no
# fused multiply-add; no debug symbols (they would triple the size of the install). MSVC
# keeps its defaults.
GCC_LIKE = sys.platform != "win32"
COMPILE_ARGS = (
    ["-O3", "-fwrapv", "-ffp-contract=off", "-g0", "-Wall", "-Wextra", "-pthread"]
    if GCC_LIKE
    else []
)
LINK_ARGS = ["-s", "-pthread"] if sys.platform.startswith("linux") else []

try:
    from Cython.Build import cythonize
except ImportError:  # building without Cython: no compiled kernels
    ext_modules = []
else:
    # each kernel: its Cython module and the C files of csrc/ it wraps
    KERNELS = {
        "permcodec.kernels.rans_c": ["csrc/multiset.c"],
        "permcodec.kernels.philox_c": [],
        "permcodec.kernels.grid_c": ["csrc/grid_rans.c"],
        "permcodec.kernels.sync_c": ["csrc/laperm_sync.c"],
        "permcodec.kernels.seeded_c": [
            "csrc/seeded_decode.c",
            "csrc/level_rans.c",
            "csrc/seeded_init.c",
            "csrc/multiset.c",
        ],
    }
    ext_modules = cythonize(
        [
            Extension(
                name,
                [f"permcodec/kernels/{name.rsplit('.', 1)[1]}.pyx", *sources],
                include_dirs=["csrc"],
                optional=True,
                extra_compile_args=COMPILE_ARGS,
                extra_link_args=LINK_ARGS,
            )
            for name, sources in KERNELS.items()
        ],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )

setup(ext_modules=ext_modules)
