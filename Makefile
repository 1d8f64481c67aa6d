# The two set-up commands of the README. Each creates .venv and installs lossbench on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test quick lint bench

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## the main job on the built-in phantom data, fully offline
	$(BIN)/lossbench study --config studies/demo.toml

test: $(STAMP)  ## the test suite, one worker process per core (each test runs torch on one thread)
	$(BIN)/python -m pytest -q -n auto --dist worksteal --durations=15

quick: $(STAMP)  ## the everyday run: the suite without the tests marked slow or servers (CI runs all)
	$(BIN)/python -m pytest -q -n auto --dist worksteal -m "not slow and not servers"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
