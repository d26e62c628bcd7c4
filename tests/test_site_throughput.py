"""benchmarks/site_throughput.py --vs-cellprofiler: the peer's start-up pipeline, its feature
count, and the refusal without the peer (the timed run itself is the benchmark's, not a test's)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, benchmark

PINNED = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")


@pytest.fixture
def site_throughput(monkeypatch):
    """The benchmark module; the thread pins its import sets are undone after the test."""
    for name in PINNED:
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    return benchmark("site_throughput")


PIPELINE = """CellProfiler Pipeline: http://www.cellprofiler.org
Version:5
ModuleCount:6

Images:[module_num:1]
    :

Metadata:[module_num:2]
    Extract metadata?:No

NamesAndTypes:[module_num:3]
    Assign a name to:All images

Groups:[module_num:4]
    Do you want to group your images?:No

IdentifyPrimaryObjects:[module_num:5]
    Select the input image:DNA

ExportToSpreadsheet:[module_num:6]
    Select the column delimiter:Comma (",")
"""


def test_startup_pipeline_keeps_the_input_modules_only(site_throughput):
    startup = site_throughput.peer_startup_pipeline(PIPELINE)
    assert "ModuleCount:4" in startup and "ModuleCount:6" not in startup
    assert "Groups:[module_num:4]" in startup
    assert "IdentifyPrimaryObjects" not in startup and "ExportToSpreadsheet" not in startup


def test_peer_feature_count_leaves_out_identifiers(site_throughput, tmp_path):
    header = {
        "Nuclei": "ImageNumber,ObjectNumber,AreaShape_Area,Location_Center_X,Location_Center_Z,"
        "Children_Cells_Count,Number_Object_Number",
        "Cells": "ImageNumber,ObjectNumber,AreaShape_Area,Parent_Nuclei,"
        "Intensity_MeanIntensity_DNA",
        "Cytoplasm": "ImageNumber,ObjectNumber,Texture_Contrast_DNA_3_00_256",
    }
    for compartment, line in header.items():
        (tmp_path / f"{compartment}.csv").write_text(line + "\n1,1" + ",0" * line.count(","))
    assert site_throughput.peer_feature_count(tmp_path) == 2 + 2 + 1


def test_vs_cellprofiler_without_the_peer_says_how_to_install(tmp_path):
    env = dict(os.environ, CELLPROFILER_VENV=str(tmp_path / "absent"))
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "site_throughput.py"), "--vs-cellprofiler"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "install.sh" in done.stderr and "not installed" in done.stderr
