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

# Until the search service lands, the demo trains plain CE and DM (the mode and spread that the
# paper picks at 40% noise) on the embedded MNIST-1D data and shows the difference.
demo: $(STAMP)
	$(BIN)/dm-search train examples/mnist1d_dm.yaml --set "loss.edf={family: cce}" \
		--set loss.normalise=none --set loss.eps=0 --json runs/demo/ce.json
	$(BIN)/dm-search train examples/mnist1d_dm.yaml --set "loss.edf={family: dm, lam: 1, beta: 16}" \
		--json runs/demo/dm.json
	$(BIN)/dm-search edf plot cce dm:lam=1,beta=16 -o runs/demo/edf_curves.html
	@echo "CE vs DM results: runs/demo/ce.json, runs/demo/dm.json; EDFs: runs/demo/edf_curves.html"

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
