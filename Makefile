# pushbench: `make bench` runs the default matrix and writes a report; `make test` runs the tests.
# Every target installs what it needs into .venv first, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/bench.toml

.PHONY: setup test test-slow bench quick lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser and not conformance" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

bench: $(STAMP)
	$(PY) -m loadgen --config $(CONFIG)
	$(PY) -m analysis results/latest

quick: $(STAMP)
	$(PY) -m loadgen --config configs/quick.toml
	$(PY) -m analysis results/latest

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
