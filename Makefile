# The two commands of the README's quick start. Each one sets up the environment it needs.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Snakemake jobs and DVC call `roaming` and `snakemake`: find them in the environment.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test clean-venv

# Create the virtual environment and install roaming with its test tools (about 1.5 minutes).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -e ".[test]"
	touch $@

# Run the default (demo) pipeline: synthetic data -> HDF5 -> training -> evaluation -> reports/.
# Through DVC's one stage (`snakemake --cores all`), so that dvc.lock records what it made and a
# later `dvc repro` or `dvc status` finds nothing changed.
demo: $(STAMP)
	$(BIN)/dvc repro

# Lint and run the test suite.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
