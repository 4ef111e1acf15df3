# Two promises: `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
# The demo installs the runtime only (the daemon never imports torch); tests add the training
# and development extras.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint bench-ingest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	touch $(RUNTIME) $(DEV)

demo: $(RUNTIME)
	$(BIN)/corticast demo

test: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench-ingest: $(RUNTIME)
	$(BIN)/python -m bench.ingest_benchmark --speed 10 --seconds 60

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
