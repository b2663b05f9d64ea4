# Two commands for a fresh machine: `make tutorial` and `make test`.
# Both create .venv (with pip) when it is missing and install the package with its dev extra.
# --no-compile skips byte-compiling every installed file (torch, transformers, ...): Python
# compiles a module on its first import instead, and the install is ~75 s faster on 2 cores.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Bytecode caches in .venv/pycache, also where PYTHONDONTWRITEBYTECODE is set (as on this
# project's development machines): without them each process of a test run or of the tutorial
# (test workers, notebook kernels, sweep and distributed workers) compiles the ~3,300 modules it
# imports again, about 4 s of a 2-core CPU each (7.6 s against 3.8 s for one import of torch,
# transformers, pandas, matplotlib and the library).
unexport PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache

.PHONY: tutorial reference docs test lint setup clean device-wheels

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -e ".[dev]"
	@touch $(STAMP)

tutorial: $(STAMP)
	$(PY) -m cormult_lib.tutorial.runner

# Every chapter at the standard profile (long: the README's timing table gives each run time):
# results/*.json with their provenance, the README pictures in figures/readme/ and the
# README's results block (pictures, run times, headline numbers) rewritten from them.
reference: $(STAMP)
	$(PY) -m cormult_lib.tutorial.reference
	$(PY) -m cormult_lib.tutorial.readme_results

# The site in docs/_build/html: runs the chapters whose executed copy is missing or stale first.
docs: $(STAMP)
	$(PY) -m cormult_lib.tutorial.site

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

# One pytest worker per core (pytest-xdist), each file and each notebook kept on one worker,
# and one torch thread per worker: two workers with a thread each beat one with two threads on
# small models, while more threads than cores would slow everything down. The notebooks nbval
# executed are kept in $(TEST_EXECUTED); the second step builds the site from them (-m site).
TEST_EXECUTED := .pytest_cache/executed-notebooks
test: lint
	rm -rf $(TEST_EXECUTED)
	OMP_NUM_THREADS=1 CORMULT_EXECUTED_DIR=$(CURDIR)/$(TEST_EXECUTED) $(PY) -m pytest -n auto \
		--dist loadfile --nbval-lax --nbval-current-env tests notebooks
	CORMULT_EXECUTED_DIR=$(CURDIR)/$(TEST_EXECUTED) $(PY) -m pytest -m site tests/test_site.py

# What benchmarks/cuda_checks.sh needs on a lent GPU machine whose image lacks it (that machine
# reaches no package index): wheels for its Python 3.12 in .whl/ (ignored), fetched here.
DEVICE_WHEELS := soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
device-wheels:
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $(DEVICE_WHEELS)

clean:
	rm -rf outputs .pytest_cache docs/_build
