# Two commands: `make run` and `make test` each set up .venv when it is missing, then run.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: run test test-fast bench gpu-check lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/rayscalp demo

test: $(STAMP)
	@bash scripts/install_test_services.sh
	@bash scripts/install_chromium.sh
	$(PY) -m pytest -q -p no:cacheprovider

# No Ray, no browser, nothing slow: RAY_ADDRESS points at a closed port, so a test that starts Ray unmarked fails.
test-fast: $(STAMP)
	RAY_ADDRESS=127.0.0.1:1 $(PY) -m pytest -q -p no:cacheprovider -m "not ray and not browser and not slow"

bench: $(STAMP)
	$(PY) -m bench

# On a CUDA machine: the gpu-marked tests, then replay, gather and learner on the device (gpu-check.json).
# Without CUDA it refuses with a one-line reason.
gpu-check: $(STAMP)
	$(PY) -m bench.gpu

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
