"""Build of the one compiled module; all metadata lives in setup.cfg."""
from setuptools import Extension, setup

# No -ffast-math, no contraction into FMAs: the kernels must round as the numpy
# functions they transcribe (neurons/poisson.py); only exp/log1p may come from
# libmvec (neurons/_vecmath.h).  Optional: without a C compiler the install goes
# on and neurons.kernels falls back to numpy (same counts, slower);
# tests/test_kernels.py fails under CI=true then.
setup(ext_modules=[Extension("neurons._fixed", ["neurons/_fixed.c"], optional=True),  # integers only
                   Extension("neurons._kernels", ["neurons/_kernels.c"], optional=True,
                             depends=["neurons/_philox.h", "neurons/_vecmath.h",
                                      "neurons/recipe.h"],
                             extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math"])])
