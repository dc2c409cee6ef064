# The two commands: `make run` (the platform, locally) and `make test` (the whole suite).
# Each creates or refreshes .venv itself.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: venv
	$(PY) -m local_stack

test: venv
	$(PY) -m pytest
