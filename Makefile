# Two commands on a fresh clone (see README):
#   make run   - set up .venv, generate the synthetic example, run the workflow, build the HTML
#                report (results/report.html), print the summary
#   make test  - set up .venv with the test extras, run the test suite (make test-heavy: the
#                reliability suite and the real Slurm, also run by CI)
PYTHON ?= python3
VENV ?= .venv
CORES ?= $(shell nproc 2>/dev/null || echo 2)
BIN := $(VENV)/bin
EXAMPLE := resources/example

.PHONY: run test test-heavy setup dry-run lint clean slurm-packages browser-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# torch first and exactly torch==2.13.0 (a local CPU wheel here; another spec fetches CUDA), then
# the cellpose extra, then cellpose without its numpy<2.1 pin and roc-validator without its rich<14
# pin (see pyproject.toml).
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,cellpose,embed]"
	$(BIN)/python -m pip install --quiet --no-deps cellpose==3.1.1.3
	$(BIN)/python -m pip install --quiet --no-deps roc-validator==0.13.0
	touch $@ $(VENV)/.installed-run

# Regenerated only when the generator changes, so reruns find the workflow up to date.
$(EXAMPLE)/platemap.csv: src/cellstrata/example.py | $(VENV)/.installed-run
	$(BIN)/cellstrata example $(EXAMPLE)

setup: $(VENV)/.installed-run

run: $(VENV)/.installed-run $(EXAMPLE)/platemap.csv
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html
	$(BIN)/cellstrata catalog --out results/catalog.html
	@cat results/summary.txt

dry-run: $(VENV)/.installed-run $(EXAMPLE)/platemap.csv
	$(BIN)/snakemake -n

# The Slurm profile test (tests/test_cluster.py) starts a one-node Slurm on localhost: Debian's
# slurm-wlm and munge, installed here when missing and apt-get can (root); otherwise that test
# is skipped and says why.
slurm-packages:
	@if [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/munged ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
	      || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }; \
	  else \
	    echo "slurm-wlm/munge missing and no root apt-get: the Slurm profile test will skip"; \
	  fi; \
	fi

# The catalog page's test (tests/stewardship/test_catalog.py) renders it in a real headless
# browser: Debian's chromium (and chromium-driver), installed here when missing and apt-get can
# (root); otherwise that test skips, and fails in CI (.ci/run sets CI).
browser-packages:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
	      || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	  else \
	    echo "chromium missing and no root apt-get: the catalog page test will skip"; \
	  fi; \
	fi

# The default suite (about 15 min on 2 cores). The heavy ones, the reliability suite (kills,
# remote faults, a soak of 10 kills) and the real one-node Slurm, run in `make test-heavy`;
# CI (.ci/run) runs both.
test: $(VENV)/.installed-test browser-packages
	$(BIN)/pytest -m "not reliability and not slurm"

test-heavy: $(VENV)/.installed-test slurm-packages
	$(BIN)/pytest -m "reliability or slurm"

lint: $(VENV)/.installed-test $(EXAMPLE)/platemap.csv
	$(BIN)/ruff check src scripts tests benchmarks
	$(BIN)/ruff format --check src scripts tests benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs .snakemake $(EXAMPLE)
