# kseg developer commands. `make run` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Exact versions of every dependency: what CI and `make install` install (with the test extra), and what
# the image installs (without). pyproject.toml keeps the ranges for library users; `make lock` re-pins.
TEST_LOCK := requirements/test-lock.txt
LOCK      := requirements/lock.txt
TOOLS     := $(VENV)-tools/bin
COMPILE    = CUSTOM_COMPILE_COMMAND="make lock" $(TOOLS)/pip-compile --quiet --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host --annotation-style=line $(LOCK_ARGS)
# Tests run on PYTEST_WORKERS pytest-xdist workers, each with its own broker, ports and temporary directories
# (tests/parallel.py); tests marked `exclusive` run alone, back to back at the start, then those marked `long`.
# `make test PYTEST_WORKERS=0` runs them serially. 6 on 2 cores: the tests mostly wait on process start-up
# and Kafka groups. `bash .ci/run` from a fresh clone (2026-12-07, 91db2dc): pytest 571 s, 965 tests.
PYTEST_WORKERS ?= 6
PYTEST_ARGS    := -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadgroup --durations=25

.PHONY: help install lock image-test run test test-unit test-integration lint typecheck bench identity-bench fuzz clean

help:
	@echo "make run    - run kseg (embedded broker + receiver + worker) on http://127.0.0.1:8080"
	@echo "make test   - lint, type-check and run every test (unit + integration on the embedded broker)"
	@echo "             on PYTEST_WORKERS=$(PYTEST_WORKERS) parallel workers (PYTEST_WORKERS=0: one after another)"
	@echo "make bench  - run the benchmark suite; writes bench/results/latest.{json,md}"
	@echo "make fuzz   - the hostile-input suite, longer: FUZZ_EXAMPLES requests within FUZZ_SECONDS (127.0.0.1 only)"
	@echo "make lock   - re-pin requirements/*.txt from pyproject.toml (LOCK_ARGS=--upgrade: newest allowed)"
	@echo "make image-test - build docker/Dockerfile with podman and run every role (root; see docs/operations.md)"
	@echo "make lint / make typecheck / make test-unit / make test-integration / make clean"

$(STAMP): pyproject.toml $(TEST_LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r $(TEST_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

lock:
	@[ -x $(TOOLS)/pip-compile ] || { $(PYTHON) -m venv $(VENV)-tools && $(TOOLS)/pip install --quiet pip-tools==7.7.0; }
	$(COMPILE) --extra test --output-file $(TEST_LOCK) pyproject.toml
	$(COMPILE) --constraint $(TEST_LOCK) --output-file $(LOCK) pyproject.toml

image-test:
	nice -n 10 docker/image-test.sh

run: $(STAMP)
	$(BIN)/kseg run

lint: $(STAMP)
	$(BIN)/ruff check app tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test: lint typecheck $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	@[ -x $(BIN)/py-spy ] || $(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.run

identity-bench: $(STAMP)
	$(BIN)/python -m bench.identity_bench

FUZZ_EXAMPLES ?= 3000
FUZZ_SECONDS  ?= 600
fuzz: $(STAMP)
	KSEG_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) KSEG_FUZZ_SECONDS=$(FUZZ_SECONDS) \
		$(BIN)/pytest tests/integration/test_hostile_input.py tests/integration/test_postback_values.py -q -s -p no:cacheprovider

clean:
	rm -rf $(VENV) $(VENV)-tools var .pytest_cache .mypy_cache .ruff_cache
