# Conveyor's developer commands. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.DEFAULT_GOAL := help
.PHONY: help demo test lint typecheck unit integration bench clean

help: ## List the targets
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Conveyor needs Python 3.11+"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create .venv and install Conveyor with its test tools

demo: $(STAMP) ## Run the demo: a multi-tenant agency workload through the queue
	$(BIN)/conveyor demo

# Four test processes on two cores: the suite mostly waits (on servers starting, on
# sockets, on PostgreSQL), so four in parallel take about half the time of one.
test: $(STAMP) lint typecheck ## Lint, type-check and run every test
	$(BIN)/pytest -n 4 --dist worksteal

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check conveyor tests benchmarks
	$(BIN)/ruff format --check conveyor tests benchmarks

typecheck: $(STAMP) ## mypy --strict on the package
	$(BIN)/mypy

unit: $(STAMP) ## Only the pure unit tests (no database)
	$(BIN)/pytest tests/unit

integration: $(STAMP) ## Only the tests on real PostgreSQL
	$(BIN)/pytest tests/integration tests/e2e

bench: $(STAMP) ## Queue throughput benchmark (100,000 tasks; prints a table)
	$(BIN)/python benchmarks/queue_throughput.py

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
