# Two commands do all set-up: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv browser demo test test-fast lint bench clean

venv: $(STAMP)

# Re-install only when the project's requirements change, so repeated runs are quick.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,postgres]"
	@touch $(STAMP)

# The main job: a real search study on the embedded MNIST-1D data (about 2 minutes on 2 CPU
# cores), then its report and its best EDF. --resume makes a second `make demo` reuse the
# finished study instead of refusing it.
demo: $(STAMP)
	$(BIN)/dm-search submit search_spaces/quickstart.yaml --resume
	$(BIN)/dm-search report quickstart -o runs/quickstart_report.html
	$(BIN)/dm-search export quickstart -o runs/best_edf.yaml
	@echo
	@echo "Report (self-contained, works offline): runs/quickstart_report.html"
	@echo "Best EDF as a loss: runs/best_edf.yaml"
	@echo "    from dm_search import load_loss; loss_fn = load_loss('runs/best_edf.yaml')"
	@echo "Dashboard: .venv/bin/dm-search dashboard   then open http://127.0.0.1:8080/"
	@echo "Status: .venv/bin/dm-search status quickstart"

# The dashboard's browser test needs Debian's chromium and chromedriver; install them once.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "installing chromium and chromium-driver (browser test of the dashboard)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver \
			>/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check dm_search tests benchmarks
	$(BIN)/mypy

test: lint browser
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_loss.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
