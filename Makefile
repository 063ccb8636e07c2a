# Build the book or run every test. Both targets set up the environment first
# (see scripts/setup.sh), so a fresh clone needs nothing but Python 3.10+.
#
#   make book   execute the notebooks and build HTML into _build/html
#   make test   unit tests, then every notebook through nbval
#   make bench  the data-pipeline benchmark behind the records page

ifneq ($(VIRTUAL_ENV),)
PYTHON := $(VIRTUAL_ENV)/bin/python
else ifneq ($(CONDA_PREFIX),)
PYTHON := $(CONDA_PREFIX)/bin/python
else
PYTHON := $(CURDIR)/.venv/bin/python
endif
BIN := $(dir $(PYTHON))
export PATH := $(BIN):$(PATH)

.PHONY: setup book test unit nbval bench clean

setup:
	bash scripts/setup.sh

book: setup
	$(BIN)jupyter-book build . -n -W --keep-going
	@echo "open _build/html/index.html"

unit: setup
	$(PYTHON) -m pytest tests

nbval: setup
	$(PYTHON) -m pytest --nbval --nbval-current-env book/

test: setup
	$(PYTHON) -m pytest tests --nbval --nbval-current-env book/

bench: setup
	$(PYTHON) benchmarks/pipeline_speed.py

clean:
	rm -rf _build
