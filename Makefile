# Every target creates the virtual environment when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: run test lint bench system-deps chart-assets clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## Run the example job on an embedded local Ray cluster with a SQLite catalog.
run: $(VENV)/.installed
	$(VENV)/bin/orchestrator submit examples/job.yaml

## Install the services the tests start (PostgreSQL, Prometheus, Chromium) and run every test.
test: $(VENV)/.installed system-deps
	$(VENV)/bin/ruff check .
	VENV=$(VENV) bash scripts/run-tests.sh

system-deps:
	bash scripts/install-system-deps.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) bench/run_all.py

## Copy the committed dashboard and alert rules into the Helm chart (its files/ are what it ships).
chart-assets:
	cp dashboards/reliability.json helm/orchestrator/files/reliability.json
	cp dashboards/alerts.yml helm/orchestrator/files/alerts.yaml

clean:
	rm -rf $(VENV) .orchestrator .pytest_cache
