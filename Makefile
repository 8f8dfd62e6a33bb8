# Quick start: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv/ if missing, installs the pinned CPU torch first, then fairsk.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fairsk-installed

.PHONY: demo test test-fast lint bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,plot,bench]"
	touch $(STAMP)

# the layer alone on diabetes, then a short run of the comparison with the baselines
# and fairlearn (tables and plot in demo_results/; the full run: benchmarks/reproduce.py)
demo: $(STAMP)
	$(BIN)/python -m fairsk.demo
	$(BIN)/python benchmarks/reproduce.py --quick

# pytest exit codes: 0 passed, 1 failures, 2 interrupted, 3 internal error,
# 4 usage error, 5 no tests collected (a failure for us: CI must test something)
test: $(STAMP)
	$(BIN)/python -m ruff check fairsk tests benchmarks examples
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/python -m ruff check fairsk tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/layer.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis

docs: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"
