PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# serving needs the package alone; tests, lint and bench need its [test] extra too
SERVE_STAMP := $(VENV)/.installed-serve
TEST_STAMP := $(VENV)/.installed-test

.PHONY: serve test bench lint migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(SERVE_STAMP)

# .[test] holds everything serving needs: the serve stamp is fresh as well
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(TEST_STAMP) $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/stockyard serve

migrate: $(SERVE_STAMP)
	$(BIN)/stockyard migrate

PYTEST_ARGS ?= -n 2

test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(TEST_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
