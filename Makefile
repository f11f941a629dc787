# `make serve`: set up .venv and start the server on the default model (all-MiniLM-L6-v2).
# `make test`:  set up .venv and run the whole suite (what CI runs through .ci/run).
# `make install`: the set-up alone; idempotent. Installs Debian's chromium (for the dashboard's
#                 browser tests) when it is missing, which needs root.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed
# The unmodified 1.10.0 client from PyPI, kept apart (it would shadow ours): tests run it
# in subprocesses with this folder on PYTHONPATH.
STOCK_CLIENT := $(VENV)/stock-client

.PHONY: install chromium serve test clean

install: $(STAMP) chromium

# Playwright drives this browser; it never downloads one of its own.
chromium:
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch first: an unpinned torch pulled in by a dependency is a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[server,test,ray,bench]'
	$(PIP) install --no-deps --target $(STOCK_CLIENT) --upgrade bert-serving-client==1.10.0
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/bert-serving-start $(ARGS)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info
