# One command each: `make train` (set up, fetch MNIST, train, evaluate) and `make test`.
# Both are idempotent: the virtual environment is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL ?= simple_cnn

.PHONY: help all install data train evaluate notebook test bench bench-quick bundled-model dist system-deps clean

all: train

help:  ## list these targets
	@grep -E '^[a-z-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | sed -E 's/^([a-z-]+):.*## /\1\t/' | expand -t 16

# torch pinned to the CPU build; two make commands at once install once (scripts/install_venv.py).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) scripts/install_venv.py

install: $(STAMP)  ## make .venv with the CPU build of PyTorch (every target does first)

data: install  ## fetch MNIST and verify it (offline too)
	$(BIN)/mnist-classifier data

train: data  ## train SimpleCNN (MODEL=improved_cnn for the other) and evaluate it into reports/
	$(BIN)/mnist-classifier train --model $(MODEL)
	$(BIN)/mnist-classifier evaluate --checkpoint models/$(MODEL)_best.pth

# simple_cnn unnamed: evaluate's own default, which falls back to the bundled model on a fresh clone.
evaluate: install  ## metrics and figures for models/MODEL_best.pth (the bundled model if none)
	$(BIN)/mnist-classifier evaluate $(if $(filter-out simple_cnn,$(MODEL)),--checkpoint models/$(MODEL)_best.pth)

# The exploration notebook in JupyterLab (its ~40 packages only on asking: the tests run it without them).
NOTEBOOK_STAMP := $(VENV)/.notebook-installed
$(NOTEBOOK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,notebook]'
	touch $(NOTEBOOK_STAMP)

# Jupyter refuses root without --allow-root: containers often run as root.
notebook: data $(NOTEBOOK_STAMP)  ## the exploration notebook in JupyterLab
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/exploration.ipynb

# The model shipped inside the package (src/mnist_classifier/bundled/): the make train recipe, calibrated.
bundled-model: data  ## retrain the model shipped inside the package
	$(BIN)/python scripts/build_bundled_model.py

# A wheel and an sdist in dist/, with the page's static files and the bundled model inside.
dist: install  ## build the wheel and sdist into dist/
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

# Debian packages the tests use: a virtual display, xdotool, chromium, Fashion-MNIST.
system-deps:  ## the Debian packages the tests use
	bash scripts/system_deps.sh

test: install system-deps  ## run the whole test suite
	$(BIN)/mnist-classifier data
	$(BIN)/python -m pytest

bench: install data  ## every benchmark; rewrites docs/benchmarks.md's top
	$(BIN)/python benchmarks/run_all.py

bench-quick: install data  ## the benchmarks in ~3 minutes, smaller
	$(BIN)/python benchmarks/run_all.py --quick

# What can be rebuilt; models/, runs/ (TensorBoard history) and data/ are the user's and stay.
clean:  ## remove .venv, reports/, dist/, build/ (models/, runs/, data/ stay)
	rm -rf $(VENV) .venv.lock reports dist build .pytest_cache
