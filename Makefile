# pyreid developer entry points. Everything installs into $(VENV), created on
# first use, so `make test` works on a fresh clone of the repository.
#
#   make test     build + install pyreid, run the test suite
#   make demo     build + install pyreid, run `pyreid demo` (unsupervised adaptation on synthetic data)
#   make bench    install requirements-bench.txt (faiss-cpu), run the pytest-benchmark suite (benchmarks/)
#   make build    rebuild the extension in place after editing csrc/ (incremental)
#   make gpu-check  on a GPU machine with torch installed (no venv, no network):
#                 build, CUDA tests, kernel smoke + compute-sanitizer, GPU
#                 benchmarks in under 8 minutes; report in gpu-report/
#                 (GPU_CHECK_ARGS="--dry-run" prints the plan, "--stages tests" picks)
#
# Switches passed through to setup.py: FORCE_CUDA=1, PYREID_FORCE_CPU=1,
# TORCH_CUDA_ARCH_LIST, DEBUG=1, NVCC_FLAGS, MAX_JOBS.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# gpu-check runs on the machine's own Python and torch, never the venv.
GPU_CHECK_PYTHON ?= python3
GPU_CHECK_ARGS ?=

.PHONY: venv deps install build test demo bench gpu-check lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-run when the pins or the test requirements change.
$(VENV)/.deps-stamp: $(PY) requirements-test.txt Makefile
	$(PY) -m pip install --quiet $(TORCH_PINS) -r requirements-test.txt
	touch $@

venv: $(PY)
deps: $(VENV)/.deps-stamp

# Editable install; object files stay in build/temp, so a second run only
# recompiles what changed.
install: deps
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	$(PY) -c "import pyreid; print('pyreid build:', pyreid.build_info())"

build: deps
	$(PY) setup.py --quiet build_ext --inplace

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: install
	$(PY) -m pyreid demo

bench: install
	$(PY) -m pip install --quiet -r requirements-bench.txt
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-columns=median,iqr,rounds $(PYTEST_ARGS)

gpu-check:
	$(GPU_CHECK_PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

lint: deps
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check pyreid tests benchmarks setup.py

clean:
	rm -rf build pyreid/*.so *.egg-info .pytest_cache .benchmarks
