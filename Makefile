# `make demo` and `make test` are idempotent: they create .venv and install what is missing first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mlpot-installed

.PHONY: install demo test clean

$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/mlpot demo --out demo-output

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf demo-output build dist *.egg-info
