# kseg developer commands. `make run` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install run test test-unit test-integration lint typecheck bench identity-bench fuzz clean

help:
	@echo "make run    - run kseg (embedded broker + receiver + worker) on http://127.0.0.1:8080"
	@echo "make test   - lint, type-check and run every test (unit + integration on the embedded broker)"
	@echo "make bench  - run the benchmark suite; writes bench/results/latest.{json,md}"
	@echo "make fuzz   - the hostile-input suite, longer: FUZZ_EXAMPLES requests within FUZZ_SECONDS (127.0.0.1 only)"
	@echo "make lint / make typecheck / make test-unit / make test-integration / make clean"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/kseg run

lint: $(STAMP)
	$(BIN)/ruff check app tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

test: lint typecheck $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

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
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
