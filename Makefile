# Two commands do all set-up: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint bench clean

venv: $(STAMP)

# Re-install only when the project's requirements change, so repeated runs are quick.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,postgres]"
	@touch $(STAMP)

# The main job: a real search study on the embedded MNIST-1D data (about 2 minutes on 2 CPU
# cores). --resume makes a second `make demo` reuse the finished study instead of refusing it.
demo: $(STAMP)
	$(BIN)/dm-search submit search_spaces/quickstart.yaml --resume
	@echo
	@echo "The study lives in runs/studies.db:  .venv/bin/dm-search status quickstart"

lint: $(STAMP)
	$(BIN)/ruff check dm_search tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_loss.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
