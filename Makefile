# The two commands a newcomer runs (README.md):
#   make demo   -- pre-train on the embedded synthetic data (curriculum + demo gin)
#   make test   -- install from scratch into .venv and run the test suite (tests marked slow:
#                  multi-process, multi-worker, fault injection, are in `make test-slow`;
#                  .ci/run runs both)
VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PY     := $(VENV)/bin/python
DEMO_DIR ?= /tmp/vatt_gh_demo

.PHONY: install test test-slow lint format demo bench clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow"

lint: install
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .

format: install
	$(VENV)/bin/ruff format --quiet .
	$(VENV)/bin/ruff check --fix --quiet .

test-slow: install
	$(PY) -m pytest -n 2 --dist loadfile -m slow

demo: install
	$(PY) tools/pretrain.py --gin_file=gin/curriculum.gin --gin_file=gin/demo.gin --model_dir=$(DEMO_DIR)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
