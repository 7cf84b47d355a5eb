# Quickstart targets. Both work offline (package registry only) and may be run repeatedly.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test install install-dev browser bench clean

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

## test: install with dev extras, then run the whole test suite
test: install-dev browser
	$(BIN)/python -m pytest -q

## bench: end-to-end throughput against the polars ceiling (several minutes, ~1.1 GB in /tmp)
bench: install-dev
	$(BIN)/python bench/throughput.py

clean:
	rm -rf runs .pytest_cache
