# One entry point for every routine task; `make test` is what CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint unit bench clean venv demo

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint unit

bench: $(STAMP)
	$(BIN)/python -m tests.perf.bench_simulators
	$(BIN)/python -m tests.perf.bench_agent
	$(BIN)/python -m tests.perf.bench_ingest
	$(BIN)/python -m tests.perf.bench_rul
	$(BIN)/python -m tests.perf.bench_api
	$(BIN)/python -m tests.perf.bench_live
	$(BIN)/python -m tests.perf.bench_research

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info

demo: $(STAMP)
	$(BIN)/battery-fleet demo $(DEMO_ARGS)
