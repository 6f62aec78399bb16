# The two commands of the README: `make demo` and `make test` (each sets up what it needs).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Stale when pyproject.toml changes: the stamp is older than it.
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export OPENBLAS_NUM_THREADS ?= 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

.PHONY: setup demo test test-fast ui serve bench bench-api clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cohortflow demo

# Two workers, a test file each at a time: most of the suite waits on dbt and DuckDB subprocesses.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow'

ui: $(STAMP)
	$(BIN)/cohortflow ui

# The Profile / Cohort API and the event endpoint on http://127.0.0.1:8000 (docs/api.md).
serve: $(STAMP)
	$(BIN)/cohortflow serve

bench: $(STAMP)
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_sync_file.py

# Needs wrk and hey (apt-get install -y wrk hey) and ~10 min the first time (a 100k-user run, cached).
bench-api: $(STAMP)
	$(BIN)/python bench/bench_api.py

clean:
	rm -rf warehouse data/generated dbt_project/target dbt_project/logs .pytest_cache
	find .dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
