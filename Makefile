# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each one creates the project-local virtual environment (.venv) on first use.
#
# TORCH_SPEC picks the torch build installed into .venv. The default takes the CPU
# wheel this project is developed on; GPU users pass their own, e.g.
#   make test TORCH_SPEC="torch>=2.4"
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed

.PHONY: install test test-all lint typecheck demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check wsi_ncmi tests tools
	$(VENV)/bin/ruff format --check wsi_ncmi tests tools

typecheck: $(STAMP)
	$(VENV)/bin/mypy wsi_ncmi

## The test command (README, .ci/run): lint, types, then the CPU test suite.
test: lint typecheck
	$(PY) -m pytest -m "not slow and not gpu" -q

test-all: lint typecheck
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m wsi_ncmi.demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
