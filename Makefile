# oom-killer: `make up` runs it on your current kube context, `make test` runs the tests.
# Everything Python runs from ./venv, the virtualenv Pulumi.yaml names, made here from the requirements files.

PYTHON ?= python3
VENV ?= venv
BIN := $(VENV)/bin

.PHONY: test lint pytest bench clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

## test: lint, types and every test (the README's test command; CI runs exactly this)
test: lint pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

pytest: $(BIN)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

## bench: time to the OOM kill against stress-ng and MAP_POPULATE, baseline RSS, CPU while holding (root, Linux)
bench: $(BIN)/.installed
	$(BIN)/python bench/oom_bench.py
