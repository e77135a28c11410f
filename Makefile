# Setup contract: `make demo`, `make test` and `make install` work on a fresh machine and are fast when
# nothing changed (each install step is a stamp file that depends on pyproject.toml).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_PHOTOS = $$($(BIN)/python -c "import pathlib, skimage; d = pathlib.Path(skimage.__file__).parent / 'data'; print(*(d / n for n in ('coffee.png', 'chelsea.png', 'rocket.jpg', 'astronaut.png')))")

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

# torch's CPU build (about 200 MB; the default Linux wheel brings CUDA, 5 GB) for the torch engine's tests.
TORCH_CPU ?= torch==2.13.0

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet '$(TORCH_CPU)'
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

demo: install
	$(BIN)/imagenet-zoo classify $(DEMO_PHOTOS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
