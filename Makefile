# Two commands do all set-up (see README):
#   make demo   create .venv, install, run the workflow on the generated demo data
#   make test   create .venv, install, prepare the system for the tests (SLURM, Chromium; as root), run pytest
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
SMK     := $(VENV)/bin/snakemake
STAMP   := $(VENV)/.installed
CORES   ?= all

.PHONY: setup demo test lint format system clean-results

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: setup
	$(SMK) --profile profiles/local --configfile config/demo.yaml --cores $(CORES)
	@echo "report: results/report.html"

system:
	bash tests/setup-system.sh

test: setup system
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check wormflow scripts tests benchmarks
	$(VENV)/bin/ruff format --check wormflow scripts tests benchmarks
	$(VENV)/bin/snakefmt --check Snakefile rules
	$(SMK) --lint

format: setup
	$(VENV)/bin/ruff check --fix wormflow scripts tests benchmarks
	$(VENV)/bin/ruff format wormflow scripts tests benchmarks
	$(VENV)/bin/snakefmt Snakefile rules

clean-results:
	rm -rf results .snakemake logs
