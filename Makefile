# Setup contract: `make demo`, `make test` and `make install` work on a fresh machine and are fast when
# nothing changed (each install step is a stamp file that depends on pyproject.toml).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_PHOTOS = examples/coffee.jpg examples/chelsea.jpg examples/rocket.jpg examples/astronaut.jpg

.PHONY: install demo test lint clean default-install

install: $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# torch's CPU build (about 200 MB; the default Linux wheel brings CUDA, 5 GB) for the torch engine's tests.
TORCH_CPU ?= torch==2.13.0

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet '$(TORCH_CPU)'
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

# The default install alone (no extras), from this checkout, for tests/test_default_install.py: what a user
# of `pip install imagenet-zoo` gets. Not editable, so the package's data files are checked too.
DEFAULT_VENV := .venv-default
default-install: $(DEFAULT_VENV)/.installed

$(DEFAULT_VENV)/.installed: pyproject.toml $(shell find src -type f -not -name '*.pyc')
	test -x $(DEFAULT_VENV)/bin/python || $(PYTHON) -m venv $(DEFAULT_VENV)
	$(DEFAULT_VENV)/bin/pip install --quiet --upgrade pip
	$(DEFAULT_VENV)/bin/pip install --quiet --force-reinstall --no-deps .
	$(DEFAULT_VENV)/bin/pip install --quiet .
	rm -rf build
	touch $@

demo: install
	$(BIN)/imagenet-zoo classify $(DEMO_PHOTOS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy

test: lint default-install
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(DEFAULT_VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
