# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
PYTEST_ARGS ?=
# jemalloc preloaded when installed (gnj/perf.py allocator_env; GNJ_ALLOCATOR=system to opt out)
ALLOC := env $$($(PY) -m gnj.perf allocator-env)

.PHONY: run test test-all docs-check bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $@

## Install, then train the default config (digits, offline, < 3 min on 2 CPU cores).
run: $(VENV)/.installed
	$(ALLOC) $(PY) -m gnj.main --config=configs/default.py --workdir=$(WORKDIR)

## Install with test extras, then run the test suite (slow tests excluded; see test-all).
test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

## Every test, slow ones included.
test-all: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist loadgroup -m "" $(PYTEST_ARGS)

## The docs' checks with their slow runs: docs/extending.md trained, every README table command.
docs-check: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist loadgroup -m "" tests/test_docs.py $(PYTEST_ARGS)

## Benchmarks against PyTorch (CPU build); prints a table and writes bench.json.
bench: $(VENV)/.installed-bench
	$(ALLOC) $(PY) -m bench.run

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check gnj configs launch tests bench

clean:
	rm -rf $(VENV) runs bench.json
