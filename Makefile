# Two commands matter: `make run` (everything, locally) and `make test` (what CI runs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: install run test test-cluster lint typecheck docs bench bench-quick bench-smoke bench-history chaos chaos-state-machine chaos-faults acceptance clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c constraints.txt
	touch $(STAMP) $(RUN_STAMP)

install: $(STAMP)

# What make run needs and no more: Conveyor and uvloop, not the tools of make install (mypy,
# hypothesis, schemathesis...), which made the first run twice as long, all of it in silence.
$(RUN_STAMP): pyproject.toml constraints.txt
	@echo "Installing Conveyor into $(VENV) (first run only, about 20 s)…"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet -e '.[speed]' -c constraints.txt
	@touch $(RUN_STAMP)
	@echo "Installed. Starting Conveyor: embedded Redis, a worker and a demo workload."

## Start an embedded Redis (unless CONVEYOR_REDIS_URL is set), a worker and a demo workload.
## One plain command, which make runs without a shell: a shell between them would die of the
## Ctrl-C, and make would report it once more ("*** [run] Interrupt").
run: $(RUN_STAMP)
	$(BIN)/conveyor dev

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## The documentation site (docs/, mkdocs.yml), built strict: a broken link, a bad anchor or a
## warning of the API reference fails it. Built outside the tree; `mkdocs serve` previews it.
## (Its Python examples run in the test suite: tests/test_docs_examples.py.)
DOCS_OUT ?= $(or $(TMPDIR),/tmp)/conveyor-site
# Not --quiet: it hides the warnings from --strict too, and the build passes with them.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(DOCS_OUT)

## Lint, type-check, build the docs, run the whole test suite against private servers the tests
## start, then a smoke run of the benchmark harness (tiny sizes, timings not judged) so it never rots.
## The suite runs in two phases: first every test not marked `serial`, spread by file over
## $(TEST_WORKERS) processes (pytest-xdist; each starts private servers of its own), then the `serial`
## ones alone: those that time things, signal processes or fail on a busy CPU, and all of tests/chaos.
## New tests are parallel unless marked serial (how and when: tests/conftest.py). Both phases
## run, each with its own summary, and a failure in either fails make test; only an interrupted
## first phase (Ctrl-C: pytest exits 2) skips the second. Plain `pytest` runs all in one process.
# Three processes on two cores: the parallel tests spend much of their time waiting on servers
# and subprocesses (measured: 170 s with 3, 232 s with 2, 193 s with 4 on this 2-core machine).
TEST_WORKERS ?= 3
test: lint typecheck
	$(MAKE) docs
	$(BIN)/python -m pytest -m "not serial" -n $(TEST_WORKERS) --dist loadfile; parallel=$$?; \
	[ $$parallel -ne 2 ] || exit 2; \
	$(BIN)/python -m pytest -m serial; serial=$$?; \
	[ $$parallel -eq 0 ] && [ $$serial -eq 0 ]
	$(MAKE) bench-smoke

## The core, feature and API suites again, against a private 3-primary Redis Cluster the
## tests start (tests needing one plain server are skipped, each with its reason).
test-cluster: $(STAMP)
	CONVEYOR_TEST_TOPOLOGY=cluster $(BIN)/python -m pytest -p no:cacheprovider -rs --ignore=tests/chaos

bench-smoke: $(STAMP)
	bash bench/setup_peers.sh redis5 redis8
	$(BIN)/python bench/run.py --quick --out $(or $(TMPDIR),/tmp)/conveyor-bench-smoke

## Long reliability runs (see RELIABILITY.md); make test runs small variants of the same tests.
chaos: chaos-state-machine chaos-faults

chaos-state-machine: $(STAMP)
	CONVEYOR_STATEFUL_EXAMPLES=5000 CONVEYOR_STATEFUL_STEPS=50 $(BIN)/python -m pytest -p no:cacheprovider \
		-o addopts="" --timeout=3600 tests/ops/test_state_machine.py -q

## The fault suites of tests/chaos at full size; prints the summary table for RELIABILITY.md.
CHAOS_OUT ?= $(or $(TMPDIR),/tmp)/conveyor-chaos.jsonl
chaos-faults: $(STAMP)
	rm -f $(CHAOS_OUT)
	CONVEYOR_CHAOS_REPORT=$(CHAOS_OUT) CONVEYOR_CHAOS_FULL=1 \
	CONVEYOR_CHAOS_JOBS=100000 CONVEYOR_CHAOS_RATE=800 \
	CONVEYOR_CHAOS_CRASH_RUNS=200 \
	CONVEYOR_CHAOS_POISON_GOOD=10000 CONVEYOR_CHAOS_POISON_BAD=1000 \
	CONVEYOR_CHAOS_STALL_SPIN=1000 CONVEYOR_CHAOS_STALL_HOG=1000 \
	CONVEYOR_CHAOS_CROSSTALK=10000 \
	CONVEYOR_CHAOS_NET_JOBS=20000 CONVEYOR_CHAOS_NET_RATE=1000 CONVEYOR_CHAOS_BLACKHOLE=20 \
	CONVEYOR_CHAOS_AOF_JOBS=50000 CONVEYOR_CHAOS_AOF_RATE=2500 \
	CONVEYOR_CHAOS_FAILOVER_JOBS=20000 CONVEYOR_CHAOS_FAILOVER_RATE=1000 \
	CONVEYOR_CHAOS_MIGRATION_JOBS=20000 \
	CONVEYOR_CHAOS_OUTAGES=5 CONVEYOR_CHAOS_OUTAGE_JOBS=100 CONVEYOR_CHAOS_OUTAGE_SCALE=1 \
	CONVEYOR_CHAOS_HISTORY_JOBS=100000 CONVEYOR_CHAOS_HISTORY_RATE=800 \
	CONVEYOR_CHAOS_HISTORY_PG_DOWN=60 CONVEYOR_CHAOS_HISTORY_KILL_EVERY=3 \
		$(BIN)/python -m pytest -p no:cacheprovider -o addopts="" --timeout=3600 -q -rxX tests/chaos
	$(BIN)/python tests/chaos/summary.py $(CHAOS_OUT)

## The independent acceptance script of the job features (issue 3): public API only, own server.
acceptance: $(STAMP)
	$(BIN)/python acceptance/features.py
acceptance-metrics: $(STAMP)  ## issue 16: exported metrics against a known workload
	$(BIN)/python acceptance/metrics.py

## Full benchmark against the peer libraries (minutes; see BENCHMARKS.md).
bench: $(STAMP)
	bash bench/setup_peers.sh
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	bash bench/setup_peers.sh
	$(BIN)/python bench/run.py --quick

## What the job history costs and how fast it is (issue 15): drain with history on and off,
## archive throughput, Redis memory per hand-off entry, searches over 1,000,000 stored jobs,
## on a private Redis and PostgreSQL (minutes). Smaller: ARGS="--jobs 5000 --store-rows 20000".
bench-history: $(STAMP)
	$(BIN)/python bench/history_bench.py $(ARGS)

clean:
	rm -rf $(VENV) .conveyor .mypy_cache .ruff_cache .pytest_cache
