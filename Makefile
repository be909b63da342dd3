# fbocc: `make demo` runs the whole chain here; `make test` runs every suite. Both install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# The virtual environment is cached outside the checkout, keyed by the dependency lists in pyproject.toml
# (not by file time), so a fresh clone (CI) reuses it; the package itself is re-linked from this checkout.
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/fbocc
DEPS_KEY := $(shell $(PYTHON) -c "import tomllib,hashlib,json; p=tomllib.load(open('pyproject.toml','rb'))['project']; print(hashlib.sha256(json.dumps([p['dependencies'], p['optional-dependencies']]).encode()).hexdigest()[:16])")
VENV ?= $(CACHE_DIR)/venv-$(DEPS_KEY)
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := docker.io openssh-server openssh-client g++-aarch64-linux-gnu debootstrap ca-certificates
PYTEST_ARGS ?=

.PHONY: help setup system-deps services venv test test-gpu bench-kernels lint demo clean cross-build

help:
	@echo "make demo   - the whole chain on this machine against an embedded local target"
	@echo "make test   - every test suite (installs what it needs first)"
	@echo "make setup  - system packages (as root on Debian), services, virtual environment"
	@echo "make lint   - ruff, mypy, Python 3.8 check of deploy/"
	@echo "make cross-build - aarch64 plugin library in the sim build image (CROSS_BUILD_ARGS=--profile P ...)"
	@echo "make check-old-toolchain - plugins/ with CUDA 11.2 + g++ 9.3 and CUDA 11.8 + g++ 11.3 (Debian images; root once)"

setup: system-deps services venv

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "setup: installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "setup: not root or not Debian: install $(SYSTEM_PACKAGES) yourself"; fi

services:
	@if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "setup: starting dockerd (--bridge=none --iptables=false)"; \
	    setsid dockerd --bridge=none --iptables=false >/tmp/fbocc-dockerd.log 2>&1 < /dev/null & \
	    for i in $$(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
	    docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start, see /tmp/fbocc-dockerd.log"; exit 1; }; \
	  else echo "setup: no Docker daemon answers; start one (e.g. sudo systemctl start docker)"; fi; \
	fi

$(VENV)/.complete:
	@echo "setup: creating $(VENV)"
	rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned to the CPU build that lies on this machine's disk; an unpinned torch pulls GBs of CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,export]'
	touch $@

venv: $(VENV)/.complete
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || $(PY) -m pip install -q --no-deps -e .
	@ln -sfn $(VENV) .venv

test: setup
	$(PY) -m pytest --durations=15 $(PYTEST_ARGS)

# On the GPU machine (no network): the system python there already has torch with CUDA.
GPU_TESTS := $(shell grep -l 'mark.gpu' tests/test_*.py)
test-gpu:
	$(PYTHON) -m pytest -m gpu -p no:cacheprovider $(GPU_TESTS) $(PYTEST_ARGS)

# On the GPU machine: the plugin kernels vs the PyTorch references at FB-OCC's shapes -> markdown table.
BENCH_KERNELS_OUT ?= docs/benchmarks/kernels.md
bench-kernels:
	$(PYTHON) benchmarks/kernels.py --output $(BENCH_KERNELS_OUT) $(if $(BASELINE_SRC),--baseline-src $(BASELINE_SRC)) $(if $(BASELINE_PATCH),--baseline-patch $(BASELINE_PATCH)) $(if $(BASELINE_COMPAT),--baseline-compat $(BASELINE_COMPAT)) $(if $(TRT_SRC),--trt-src $(TRT_SRC)) $(BENCH_ARGS)

# On the GPU machine: FB-OCC forward latency in PyTorch (references vs our kernels, fp32/fp16) -> markdown.
BENCH_MODEL_OUT ?= docs/benchmarks/model.md
bench-model:
	$(PYTHON) benchmarks/model.py --output $(BENCH_MODEL_OUT) $(BENCH_ARGS)

# Here: push-to-target vs OpenSSH scp of the same 300 MB artefact set over a loopback sshd -> markdown.
.PHONY: bench-push
BENCH_PUSH_OUT ?= docs/benchmarks/push.md
bench-push: venv
	$(PY) benchmarks/push.py --out $(BENCH_PUSH_OUT) $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff check fbocc tests tools
	$(VENV)/bin/mypy
	$(VENV)/bin/vermin --no-tips --violations -t=3.8- deploy

# The plugin library for Orin from the public sim build image (made here from debootstrap + PyPI wheels).
CROSS_BUILD_ARGS ?= --profile sim
cross-build: setup
	$(PY) -m fbocc cross-build $(CROSS_BUILD_ARGS)

# plugins/ with the CUDA 11 toolchains nearest DRIVE OS 6's 11.4 (Debian's 11.2 + g++-9, 11.8 + g++-11): kernel
# library, and the plugin library against TensorRT 8.6 headers when OLD_TOOLCHAIN_TRT_HEADERS holds NvInfer.h.
# Makes the fbocc/old-cuda images once (root). OLD_TOOLCHAIN_ARGS=--toolchain cuda-11.2 picks one.
OLD_TOOLCHAIN_TRT_HEADERS ?= $(or $(FBOCC_TRT_HEADERS),/work/trt-headers)/8.6.1/include
.PHONY: check-old-toolchain
check-old-toolchain: setup
	$(PY) -m tools.old_toolchain --out build/old-toolchain $(OLD_TOOLCHAIN_ARGS) \
	  $(if $(wildcard $(OLD_TOOLCHAIN_TRT_HEADERS)/NvInfer.h),--trt-headers $(OLD_TOOLCHAIN_TRT_HEADERS))

demo: setup
	$(PY) -m fbocc.demo

clean:
	rm -rf build dist out .pytest_cache .mypy_cache .ruff_cache
