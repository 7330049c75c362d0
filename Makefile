# Two commands matter: `make run` (everything, locally) and `make test` (what CI runs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck bench bench-quick bench-smoke chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start an embedded Redis (unless CONVEYOR_REDIS_URL is set), a worker and a demo workload.
run: $(STAMP)
	$(BIN)/conveyor dev

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## Lint, type-check, run the whole test suite against private servers the tests start, then
## a smoke run of the benchmark harness (tiny sizes, timings not judged) so it never rots.
test: lint typecheck
	$(BIN)/python -m pytest
	$(MAKE) bench-smoke

bench-smoke: $(STAMP)
	bash bench/setup_peers.sh redis5 redis8
	$(BIN)/python bench/run.py --quick --out $(or $(TMPDIR),/tmp)/conveyor-bench-smoke

## Long reliability runs (see RELIABILITY.md); make test runs small variants of the same tests.
chaos: $(STAMP)
	CONVEYOR_STATEFUL_EXAMPLES=5000 CONVEYOR_STATEFUL_STEPS=50 $(BIN)/python -m pytest -p no:cacheprovider \
		-o addopts="" --timeout=3600 tests/test_state_machine.py -q

## Full benchmark against the peer libraries (minutes; see BENCHMARKS.md).
bench: $(STAMP)
	bash bench/setup_peers.sh
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	bash bench/setup_peers.sh
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .conveyor .mypy_cache .ruff_cache .pytest_cache
