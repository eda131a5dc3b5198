# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench mock clean mutate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## Run the gateway on its embedded defaults (127.0.0.1:8080, passthrough on).
run: $(STAMP)
	RECOVEA_PASSTHROUGH=$${RECOVEA_PASSTHROUGH:-on} $(BIN)/recovea serve

## Start the local mock provider on :9000.
mock: $(STAMP)
	$(BIN)/recovea mock-provider --port 9000

## Lint, type-check and run the whole test suite.
test: $(STAMP)
	$(BIN)/ruff check recovea_proxy tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -n auto --dist loadfile --durations=25

## Mutation testing of the modules where a silent regression costs the most (slow: not
## part of `make test`). Every survivor must be killed by a test or explained in
## mutation-survivors.md. One group only: make mutate MUTANTS='recovea_proxy.providers.*'
MUTATE_STAMP := $(VENV)/.installed-mutate
MUTANTS ?=

$(MUTATE_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,mutate]'
	touch $(MUTATE_STAMP)

mutate: $(MUTATE_STAMP)
	rm -rf mutants
	$(BIN)/mutmut run $(MUTANTS)
	$(BIN)/python -m tests.mutation_report

## Every bench target in one run (floor, gateway-everything, gateway-hit, LiteLLM,
## Portkey, direct): bench/README.md. The peers install into .bench-peers/.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.suite

clean:
	rm -rf $(VENV) .recovea .pytest_cache .mypy_cache .ruff_cache mutants
