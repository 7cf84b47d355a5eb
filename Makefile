# Quickstart targets. Both work offline (package registry only) and may be run repeatedly.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test install install-dev browser azurite bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## demo: install, then clean data_samples/ with the Prefect flow into runs/sample/
demo: install
	$(BIN)/hygiene run configs/sample.yaml

## browser: Debian's chromium + chromedriver for the HTML report test (needs root; skipped otherwise)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium not installed and not root: the browser test will be skipped"; fi

## azurite: Microsoft's Azure Storage emulator from npm into .tools/ (not global) for the az:// tests
## (skipped without node/npm). Its blob service is started by the tests, on 127.0.0.1 only.
AZURITE_VERSION := 3.37.0
azurite:
	@if [ -x .tools/node_modules/.bin/azurite-blob ]; then :; \
	elif command -v npm >/dev/null && command -v node >/dev/null; then \
		npm install --prefix .tools --no-audit --no-fund --ignore-scripts --loglevel=error azurite@$(AZURITE_VERSION) >/dev/null; \
	else echo "node/npm not installed: the az:// object-store tests will be skipped"; fi

## test: install with dev extras, then run the whole test suite in two worker processes
## (pytest-xdist: a test waiting on a server, a subprocess or a cluster leaves its core to the other)
test: install-dev browser azurite
	$(BIN)/python -m pytest -q -n 2

## bench: end-to-end throughput against the polars ceiling (several minutes, ~1.1 GB in /tmp)
bench: install-dev
	$(BIN)/python bench/throughput.py

clean:
	rm -rf runs .pytest_cache
