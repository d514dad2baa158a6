# Two entry points: `make demo` (the main job) and `make test` (the whole suite).
# Both set up everything they need: the virtualenv, Python dependencies and the Kafka jars.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/coalmine demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/coalmine dev fetch
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/coalmine bench ingest
	$(BIN)/coalmine bench detector --json bench-results/detector.json --plot bench-results/detector.png

clean:
	-$(BIN)/coalmine dev down
	rm -rf .coalmine
