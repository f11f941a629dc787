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
# FlagEmbedding, BGE-M3's reference (tests/model/test_sparse.py), needs transformers 4 (the venv has 5):
# kept apart with the transformers it runs on and what it imports, by exact version, no dependency
# resolution (torch and numpy come from the venv); tests run it in subprocesses with this folder on PYTHONPATH.
FLAG_EMBEDDING := $(VENV)/flag-embedding
FLAG_EMBEDDING_PACKAGES := flagembedding==1.4.2 transformers==4.57.6 tokenizers==0.22.1 huggingface_hub==0.36.0 \
	datasets==3.6.0 pyarrow==26.0.1 pandas==3.1.1 dill==0.4.1 multiprocess==0.70.19 peft==0.21.2 accelerate==1.15.0

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
	$(PIP) install --no-deps --target $(FLAG_EMBEDDING) --upgrade $(FLAG_EMBEDDING_PACKAGES)
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/bert-serving-start $(ARGS)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info
