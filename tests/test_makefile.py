"""The README's commands: `make run` must really run the workflow (not a dry run)."""

from __future__ import annotations

import subprocess

from conftest import REPO


def _recipe(target: str) -> str:
    return subprocess.run(
        ["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, check=True
    ).stdout


def test_make_run_runs_the_workflow_and_prints_the_summary():
    recipe = _recipe("run")
    assert "snakemake --cores" in recipe and "snakemake -n" not in recipe
    assert "cat results/summary.txt" in recipe
    assert "snakemake --report results/report.html" in recipe
    # The report links the catalog page beside it.
    assert "cellstrata catalog --out results/catalog.html" in recipe


def test_make_test_installs_the_browser_the_catalog_test_needs():
    assert "apt-get install -y -q chromium chromium-driver" in _recipe("browser-packages")


def test_make_dry_run_is_a_dry_run():
    assert "snakemake -n" in _recipe("dry-run")


def test_makefile_has_no_overridden_recipes():
    result = subprocess.run(["make", "-n", "-C", str(REPO), "run"], capture_output=True, text=True)
    assert "overriding recipe" not in result.stderr, result.stderr
