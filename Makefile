# The two commands of the README: `make demo` and `make test`.
# Each creates or reuses .venv, installs bambo with pinned torch, then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bambo-installed

.PHONY: demo test lint bench-merge bench-partition bench-surrogates bench-text bench-strategies bench-suite bench-pmto clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,lm-eval,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bambo demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check bambo tests benchmarks

bench-merge: $(STAMP)
	$(BIN)/python -m benchmarks.merge_throughput

bench-partition: $(STAMP)
	$(BIN)/python -m benchmarks.partition

bench-surrogates: $(STAMP)
	$(BIN)/python -m benchmarks.surrogates --suite full

bench-text: $(STAMP)
	$(BIN)/python -m benchmarks.text

bench-strategies: $(STAMP)
	$(BIN)/python -m benchmarks.strategies_synthetic
	$(BIN)/python -m benchmarks.strategies_digits

bench-suite: $(STAMP)
	$(BIN)/python -m benchmarks run --suite quick

bench-pmto: $(STAMP)
	$(BIN)/python -m benchmarks.pmto_synthetic
	$(BIN)/python -m benchmarks.pmto_merge

clean:
	rm -rf $(VENV) runs .pytest_cache
