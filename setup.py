"""Build of the one compiled module; all metadata lives in setup.cfg."""
from setuptools import Extension, setup

# No -ffast-math, no contraction into FMAs: the kernels must round exactly as
# the numpy functions they transcribe (neurons/poisson.py).  Optional: without
# a C compiler the install goes on and neurons.kernels falls back to numpy
# (same numbers, slower); tests/test_kernels.py fails under CI=true then.
setup(ext_modules=[Extension("neurons._kernels", ["neurons/_kernels.c"], optional=True,
                             extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math"])])
