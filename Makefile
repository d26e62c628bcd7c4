# Two commands on a fresh clone (see README):
#   make run   - set up .venv, generate the synthetic example, run the workflow, build the HTML
#                report (results/report.html), print the summary
#   make test  - set up .venv with the test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= $(shell nproc 2>/dev/null || echo 2)
BIN := $(VENV)/bin
EXAMPLE := resources/example

.PHONY: run test setup dry-run lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# torch first and exactly torch==2.13.0 (a local CPU wheel here; another spec fetches CUDA), then
# the cellpose extra, then cellpose without its numpy<2.1 pin (see pyproject.toml).
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,cellpose,embed]"
	$(BIN)/python -m pip install --quiet --no-deps cellpose==3.1.1.3
	touch $@ $(VENV)/.installed-run

# Regenerated only when the generator changes, so reruns find the workflow up to date.
$(EXAMPLE)/platemap.csv: src/cellstrata/example.py | $(VENV)/.installed-run
	$(BIN)/cellstrata example $(EXAMPLE)

setup: $(VENV)/.installed-run

run: $(VENV)/.installed-run $(EXAMPLE)/platemap.csv
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html
	@cat results/summary.txt

dry-run: $(VENV)/.installed-run $(EXAMPLE)/platemap.csv
	$(BIN)/snakemake -n

test: $(VENV)/.installed-test
	$(BIN)/pytest

lint: $(VENV)/.installed-test $(EXAMPLE)/platemap.csv
	$(BIN)/ruff check src scripts tests benchmarks
	$(BIN)/ruff format --check src scripts tests benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs .snakemake $(EXAMPLE)
