# Two commands do all the set-up on a fresh machine:
#   make run    -> venv + install + `autolabel run` (the bundled default pipeline, CPU, minutes)
#   make test   -> venv + install + the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

run: setup
	$(BIN)/autolabel run

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint docker/Dockerfile

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
