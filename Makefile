# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export OMP_WAIT_POLICY ?= PASSIVE
export MPLBACKEND ?= Agg

# A Python 3.10: a working python3.10 on PATH first, then pyenv's versions folder.
define FIND_PY310
for c in "$$(command -v python3.10 2>/dev/null)" \
         $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.10.*/bin/python3.10 2>/dev/null | sort -V -r); do \
  if [ -n "$$c" ] && "$$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then \
    echo "$$c"; exit 0; fi; \
done; exit 1
endef

.PHONY: venv demo test test-numerics-nosimd bench bench-quick quality clean which-python
venv: $(STAMP)

which-python:
	@$(FIND_PY310) || { echo "error: no Python 3.10 found" >&2; exit 1; }

$(STAMP): setup.cfg setup.py pyproject.toml neurons/_kernels.c neurons/_philox.h neurons/_vecmath.h \
          neurons/recipe.h neurons/_fixed.c
	@py=$$( $(FIND_PY310) ) || { echo "error: no Python 3.10 found (lava-nc 0.10 needs exactly 3.10)." \
	  "Looked for python3.10 on PATH and in $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10.*;" \
	  "install one, e.g. 'pyenv install 3.10'." >&2; exit 1; }; \
	echo "using $$py"; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then \
	  rm -rf $(VENV); "$$py" -m venv $(VENV); fi
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ipvae demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

# The numerics tests again with numpy's own SIMD loops (e.g. its AVX-512 exp) switched off, so
# both of numpy's exp paths meet the contract of design §2.1.  NPY_DISABLE_CPU_FEATURES may
# name only dispatched features this CPU has (baseline ones are an error), hence computed here.
test-numerics-nosimd: $(STAMP)
	@features=$$($(PY) -c 'from numpy.core._multiarray_umath import __cpu_features__ as f, __cpu_dispatch__ as d; print(" ".join(k for k in d if f.get(k)))'); \
	echo "NPY_DISABLE_CPU_FEATURES=\"$$features\""; \
	NPY_DISABLE_CPU_FEATURES="$$features" $(PY) -m pytest -q -m numerics tests/test_recipe.py tests/test_kernels.py tests/test_poisson.py

quality: $(STAMP)
	$(PY) -m pytest -q -s tests_quality

# Every benchmark in one run, each beside its anchor timed in the same run (a while: Lava,
# Brian2's compiles, training, 1,000 x 1,000 evaluations); bench-quick: tiny sizes, the code only.
bench: $(STAMP)
	$(PY) benchmarks/run.py --out benchmarks/results.md

bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick --out runs/bench-quick.md

# The paper's experiments (issue 14): figures, NAME.json and NAME.md in runs/experiments/,
# models trained once into runs/experiments/models/ and shared by the experiments.
EXPERIMENTS := horizon backends features ood rate-distortion
.PHONY: experiments
experiments: $(STAMP)
	@set -e; for name in $(EXPERIMENTS); do \
	  echo "== ipvae experiment $$name"; \
	  $(VENV)/bin/ipvae experiment $$name --out runs/experiments; done

clean:
	rm -rf $(VENV) runs
