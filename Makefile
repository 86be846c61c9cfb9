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

# The pathology foundation models (timm, torchvision, transformers) need a torch build that
# torchvision supports; on this CPU machine that is the 2.14.1 wheel, so their tests run in
# a second environment. `make test-encoders` builds it on first use (~6 GB).
ENC_VENV       ?= .venv-encoders
ENC_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ENC_PY         := $(ENC_VENV)/bin/python
ENC_STAMP      := $(ENC_VENV)/.installed

.PHONY: install install-encoders install-browser test test-slow test-all test-encoders test-browser lint typecheck demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install-encoders: $(ENC_STAMP)

$(ENC_STAMP): pyproject.toml
	test -x $(ENC_PY) || $(PYTHON) -m venv $(ENC_VENV)
	$(ENC_PY) -m pip install --quiet --upgrade pip
	$(ENC_PY) -m pip install --quiet $(ENC_TORCH_SPEC)
	$(ENC_PY) -m pip install --quiet -e ".[dev,encoders]"
	touch $(ENC_STAMP)

## Every registered encoder (torchvision, timm, Hugging Face) built with random weights.
test-encoders: $(ENC_STAMP)
	$(ENC_PY) -m pytest -q tests/test_features_encoders.py

lint: $(STAMP)
	$(VENV)/bin/ruff check wsi_ncmi tests tools
	$(VENV)/bin/ruff format --check wsi_ncmi tests tools

## mypy on what [tool.mypy] files names in pyproject.toml: the package and the tests.
typecheck: $(STAMP)
	$(VENV)/bin/mypy

## The test command (README, .ci/run): lint, types, then the CPU test suite, spread over one
## pytest-xdist worker per core (a file's tests stay in one worker, so module fixtures are
## built once; the files of LONGEST_FIRST in tests/conftest.py go first; each worker gets
## one torch thread). PYTEST_WORKERS=0 runs it in one process. Tests marked `slow`
## (pipeline stages in child processes: kill, Ctrl-C, concurrency, DDP, the installed
## wheel; the 500-bag C17 configs; full-size slides; the fault harness) are left to
## `make test-slow`, which CI runs next.
PYTEST_WORKERS ?= auto
test: lint typecheck
	$(PY) -m pytest -m "not slow and not gpu and not browser" -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow and not gpu and not browser" -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-all: lint typecheck
	$(PY) -m pytest -m "not browser" -q

## The HTML report in a real headless browser: Debian's chromium + chromedriver (apt, as
## root, once), selenium in .venv, then the tests marked `browser`.
BROWSER_STAMP := $(VENV)/.browser

install-browser: $(BROWSER_STAMP)

$(BROWSER_STAMP): $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
	$(PY) -m pip install --quiet -e ".[browser]"
	touch $(BROWSER_STAMP)

test-browser: $(BROWSER_STAMP)
	$(PY) -m pytest -m browser -q

demo: $(STAMP)
	$(PY) -m wsi_ncmi.demo

clean:
	rm -rf $(VENV) $(ENC_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
