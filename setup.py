"""Build the compiled decode kernels (optional: without a C compiler the package
installs without them and the numba kernels or the numpy reference run instead)."""

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # building without Cython: no compiled kernels
    ext_modules = []
else:
    ext_modules = cythonize(
        [
            Extension(
                name,
                [f"permcodec/kernels/{name.rsplit('.', 1)[1]}.pyx"],
                optional=True,
                extra_compile_args=["-O3", "-ffp-contract=off"],
            )
            for name in ("permcodec.kernels.rans_c", "permcodec.kernels.philox_c")
        ],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )

setup(ext_modules=ext_modules)
