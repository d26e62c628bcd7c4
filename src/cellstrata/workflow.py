"""Helpers for the Snakefile itself (kept here so rules/common.smk stays declarative)."""

from __future__ import annotations

import os


def export_source(src: str) -> None:
    """Put ``src`` first on ``PYTHONPATH`` for every job this Snakemake process starts.

    Script jobs run in their own interpreter (the venv, or a conda environment with
    ``--sdm conda``); with the checkout's ``src`` first they import the package of the
    workflow's own commit, so the code that made an output is the code beside the Snakefile.
    Cluster jobs re-read the Snakefile and so set it again.
    """
    current = os.environ.get("PYTHONPATH", "")
    parts = [src] + [p for p in current.split(os.pathsep) if p and p != src]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)
