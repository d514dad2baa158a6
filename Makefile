# Two entry points: `make demo` (the main job) and `make test` (the whole suite).
# Both set up everything they need: the virtualenv, Python dependencies and the Kafka jars.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint check bench clean kcat chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[worker,otlp,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/coalmine demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) lint kcat chromium
	$(BIN)/coalmine dev fetch
	$(BIN)/pytest

# The hostile-input tests send what the Python clients refuse to (a header key that is not
# UTF-8) with kcat, a Kafka client this project did not write.
kcat:
	@command -v kcat >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && apt-get install -y -qq kcat >/dev/null; } || \
		{ echo "make test needs kcat: apt-get install kcat (Debian/Ubuntu) or brew install kcat"; exit 1; }

# The status page's browser test drives this chromium through Playwright, which is never let
# download a browser of its own.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
		{ echo "make test needs chromium: apt-get install chromium (Debian) for the status page test"; exit 1; }

bench: $(STAMP)
	$(BIN)/coalmine bench ingest
	$(BIN)/coalmine bench router
	$(BIN)/coalmine bench otlp
	$(BIN)/coalmine bench detector --json bench-results/detector.json --plot bench-results/detector.png
	$(BIN)/coalmine bench controller
	$(BIN)/coalmine bench incident --json bench-results/incident.json

clean:
	-$(BIN)/coalmine dev down
	rm -rf .coalmine
