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

demo: $(STAMP)
	$(BIN)/dm-search edf list
	$(BIN)/dm-search edf describe dm --mode 0.3333 --spread 8
	$(BIN)/dm-search edf plot cce gce:q=0.7 dm:lam=0.5,beta=8 dm:lam=1,beta=16 dm:lam=2,beta=16 \
		-o runs/demo/edf_curves.html

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
