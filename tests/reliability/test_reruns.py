"""Reliability case 10: what a change re-runs. A parameter change re-runs its level and what
uses it, an edited script re-runs its rule, and an edited package module re-runs the rules
whose scripts can reach its code, through the `snakemake` command line on a copy of the
workflow (Snakefile, rules, scripts, src, profiles), never the repository's own files.

Snakemake's "code" trigger covers a rule's script file (by its modification time), not the
package code the script calls: `params: code=code_of(<script>)` (rules/common.smk,
cellstrata.workflow.digests.code_files) gives each rule a digest of the package modules its script
can reach, so Snakemake's params trigger covers them. Its reach is followed name by name:
cellstrata.config imports segment and features inside its validation functions, which no job
calls, so an edit of features.py must not re-run segmentation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import (
    FEATURES_AND_AFTER,
    REPO,
    example_config,
    job_counts,
    main_version,
    snakemake_command,
)

from cellstrata.workflow.digests import CodeDigests, code_files
from cellstrata.workflow.failpoint import FAULT_VARIABLE

# What a copy of the workflow needs (report/ for the report directive, envs/ for conda:).
WORKFLOW_PARTS = ("Snakefile", "rules", "scripts", "src", "profiles", "report", "envs", "config")
# Levels a features change must leave alone (their outputs' modification times are checked).
UPSTREAM_LEVELS = ("manifest", "qc", "illumination", "corrected", "masks", "crops")


def snakemake(snakefile: Path, workdir: Path, *args: str):
    env = {k: v for k, v in os.environ.items() if k != FAULT_VARIABLE}
    result = subprocess.run(
        snakemake_command(workdir, *args, snakefile=snakefile),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=snakefile.parent,
        env=env,
        timeout=600,
    )
    result.output = result.stdout
    return result


def triggered(output: str, reason: str) -> set[str]:
    """The rules a dry run's "Reasons" section lists under ``reason``."""
    lines = output.splitlines()
    heading = f"    {reason}:"
    if heading not in lines:
        return set()
    return {rule.strip() for rule in lines[lines.index(heading) + 1].split(",")}


def plan(snakefile: Path, workdir: Path) -> tuple[dict[str, int], str]:
    dry = snakemake(snakefile, workdir, "-n")
    assert dry.returncode == 0, dry.output[-4000:]
    return job_counts(dry.output), dry.output


def mtimes(workdir: Path, levels=UPSTREAM_LEVELS) -> dict[str, int]:
    return {
        path.relative_to(workdir).as_posix(): path.stat().st_mtime_ns
        for level in levels
        for path in (workdir / "results" / level).rglob("*")
    }


@contextmanager
def edited(path: Path, addition: str) -> Iterator[None]:
    """``path`` with ``addition`` appended, then its bytes and times restored."""
    original, stat = path.read_bytes(), path.stat()
    path.write_bytes(original + addition.encode())
    try:
        yield
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    """The workflow copied with its files' times (copytree's copy2): the Snakefile to run."""
    root = tmp_path_factory.mktemp("workflow")
    for part in WORKFLOW_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / part)
    return root / "Snakefile"


@pytest.fixture(scope="module")
def kept_config(small_example) -> dict:
    """example_run's config with the corrected images kept: with retention delete, any
    re-run of a level that reads them must first remake them (see
    test_parameter_change_with_deleted_corrected_images)."""
    config = example_config(small_example)
    config["retention"]["levels"]["corrected"] = "keep"
    return config


@pytest.fixture(scope="module")
def kept_run(workflow_copy, kept_config, tmp_path_factory) -> Path:
    """A complete run of ``kept_config`` with the workflow copy; tests dry-run on it and
    restore what they edit, or work on a copy of it."""
    workdir = tmp_path_factory.mktemp("kept")
    (workdir / "config.yaml").write_text(yaml.safe_dump(kept_config))
    result = snakemake(workflow_copy, workdir, "--cores", "2")
    assert result.returncode == 0, result.output[-4000:]
    assert plan(workflow_copy, workdir)[0] == {}
    return workdir


# -- the reach of a script, unit by unit -----------------------------------------------------


@pytest.mark.case("10", "a change re-runs only what it affects (params, script, package code)")
def test_code_files_follow_names_not_files(tmp_path):
    """A script reaches the modules of the names it uses, through function bodies (imports
    inside functions included) and module-level code, not every module its modules import;
    the digest changes with exactly those files."""
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": """
            from pkg.c import helper
            from pkg.e import CONSTANT

            TABLE = {"x": helper}


            def used():
                from pkg.b import work

                return work()


            def unused():
                from pkg.d import other

                return other()
            """,
        "b.py": "def work():\n    return 1\n",
        "c.py": "def helper():\n    return 2\n",
        "d.py": "def other():\n    return 3\n",
        "e.py": "CONSTANT = 4\n",
    }
    for name, text in files.items():
        (package / name).write_text(textwrap.dedent(text))
    script = tmp_path / "script.py"
    script.write_text("from pkg.a import used\n\nused()\n")
    reached = code_files(script, tmp_path / "src", "pkg")
    # c: a module-level table refers to it; e: imported at module level, its module runs.
    assert [p.name for p in reached] == ["__init__.py", "a.py", "b.py", "c.py", "e.py"]

    before = CodeDigests(tmp_path / "src", "pkg")(script)
    (package / "d.py").write_text("def other():\n    return 30\n")
    assert CodeDigests(tmp_path / "src", "pkg")(script) == before
    (package / "b.py").write_text("def work():\n    return 10\n")
    assert CodeDigests(tmp_path / "src", "pkg")(script) != before


@pytest.mark.case("10", "a change re-runs only what it affects (params, script, package code)")
def test_moved_code_keeps_its_digest(tmp_path):
    """Reorganising the package re-runs nothing: a function moved to a module of a
    subpackage (its caller importing it from there), new docstrings and a comment keep the
    digest; an
    edit of the moved function's body changes it."""
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from pkg.b import work\n\n\ndef used():\n    return work() + 1\n"
    )
    (package / "b.py").write_text("def work():\n    return 1\n\n\ndef other():\n    return 2\n")
    script = tmp_path / "script.py"
    script.write_text("from pkg.a import used\n\nused()\n")
    before = CodeDigests(tmp_path / "src", "pkg")(script)

    (package / "sub").mkdir()
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "work.py").write_text(
        '"""Moved here."""\n\n\ndef work():\n    """Its docstring."""\n    return 1\n'
    )
    (package / "b.py").write_text("def other():\n    return 2\n")
    (package / "a.py").write_text(
        "from pkg.sub.work import work\n\n\ndef used():\n    return work() + 1  # why\n"
    )
    assert CodeDigests(tmp_path / "src", "pkg")(script) == before
    (package / "sub" / "work.py").write_text("def work():\n    return 10\n")
    assert CodeDigests(tmp_path / "src", "pkg")(script) != before


@pytest.mark.case("10", "a change re-runs only what it affects (params, script, package code)")
def test_code_files_of_the_workflow_scripts():
    """The repository's scripts: segmentation reaches neither the features nor the plots
    code, the features script reaches every measurement module."""
    src = REPO / "src"

    def reach(script):
        return {
            p.relative_to(src / "cellstrata").as_posix()
            for p in code_files(REPO / "scripts" / script, src)
        }

    segment = reach("segment.py")
    assert {
        "segment/__init__.py",
        "segment/classical.py",
        "segment/cells.py",
        "segment/cellpose.py",
        "segment/batch.py",
        "segment/params.py",
        "images/illumination.py",
        "io.py",
        "stewardship/provenance.py",
    } <= segment
    assert (
        not {
            "singlecell/features.py",
            "report/figures.py",
            "profiles/aggregate.py",
            "singlecell/crops.py",
            "segment/evaluate.py",
        }
        & segment
    )
    features = reach("features.py")
    assert {"singlecell/features.py", "measure/texture.py", "measure/granularity.py"} <= features
    # segment/__init__.py and params.py, versions.py: features jobs name versions, they do not
    # segment (the package's exports are lazy).
    assert not {"segment/classical.py", "segment/cells.py", "report/figures.py"} & features
    for figures in (
        "plate_overview.py",
        "image_figures.py",
        "overlays.py",
        "experiment_figures.py",
    ):
        assert "segment/classical.py" not in reach(figures)


# -- a parameter change ----------------------------------------------------------------------


@pytest.mark.case("10", "a change re-runs only what it affects (params, script, package code)")
def test_parameter_change_reruns_only_the_affected_levels(
    workflow_copy, kept_run, kept_config, tmp_path
):
    """A features option changed: the params trigger names the features jobs only, the plan
    is features and what reads them, and the run leaves segmentation, correction, crops and
    everything before untouched; then nothing is left to do."""
    workdir = tmp_path / "run"
    shutil.copytree(kept_run, workdir, symlinks=True)
    config = dict(kept_config, features={"options": {"AreaShape": {"zernike": False}}})
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))

    # Not `--list-changes params`: Snakemake 9.27 lists every output with recorded params
    # there (ParamsChange.__or__ in snakemake/persistence returns a change that is false but
    # carries its files, and get_outputs_with_changes iterates it; no upstream issue found, the
    # code came with snakemake/snakemake#3313 for #3288). The dry run's per-job
    # reasons are right; with params as the only trigger they name the features jobs alone.
    params_only = snakemake(workflow_copy, workdir, "-n", "--rerun-triggers", "params")
    assert params_only.returncode == 0, params_only.output[-4000:]
    changed = {
        (block.split("rule ")[1].split(":")[0], block.split("batch=")[1].split(",")[0].split()[0])
        for block in params_only.output.split("\n\n")
        if "reason: Params have changed" in block
    }
    assert changed == {("features", "A01-A06"), ("features", "B01-B06")}, changed
    counts, output = plan(workflow_copy, workdir)
    assert counts == FEATURES_AND_AFTER, counts
    assert triggered(output, "params have changed since last execution") == {"features"}

    before = mtimes(workdir)
    version = main_version(config)
    features = workdir / f"results/features/{version}/SYN01/A01-A06.parquet"
    old_features = features.stat().st_mtime_ns
    result = snakemake(workflow_copy, workdir, "--cores", "2")
    assert result.returncode == 0, result.output[-4000:]
    assert job_counts(result.output) == FEATURES_AND_AFTER
    assert mtimes(workdir) == before
    assert features.stat().st_mtime_ns > old_features
    assert plan(workflow_copy, workdir)[0] == {}


@pytest.mark.case("10", "a change re-runs only what it affects (params, script, package code)")
def test_parameter_change_with_deleted_corrected_images(small_example, example_run, tmp_path):
    """With the example's retention (corrected images: delete) the same change also re-runs
    correct, whose images the features jobs read, and then segment and crops: Snakemake
    re-runs every consumer of a re-made file, `ancient()` included when the file is missing
    (snakemake/dag.py, update_needrun). README's retention section says so for new versions;
    the results are the same bytes, the time is what keeping `corrected` saves."""
    workdir = tmp_path / "run"
    shutil.copytree(example_run, workdir, symlinks=True)
    config = example_config(small_example, features={"options": {"AreaShape": {"zernike": False}}})
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    counts, output = plan(REPO / "Snakefile", workdir)
    assert counts.get("correct") == 2 and counts.get("segment") == 2, counts
    assert counts.get("features") == 2, counts
    # Still nothing before the corrected images: the manifest, QC, illumination functions.
    assert not {"ingest", "qc", "illumination"} & set(counts), counts


# -- edited code ------------------------------------------------------------------------------


@pytest.mark.case("10", "a change re-runs only what it affects (params, script, package code)")
def test_editing_a_script_reruns_its_rule(workflow_copy, kept_run):
    """scripts/features.py edited: its rule and what reads its tables (Snakemake's code
    trigger, by the script's modification time); restored with its old time: nothing."""
    script = workflow_copy.parent / "scripts" / "features.py"
    with edited(script, "# a comment\n"):
        counts, output = plan(workflow_copy, kept_run)
        assert counts == FEATURES_AND_AFTER, counts
        assert triggered(output, "code has changed since last execution") == {"features"}
    assert plan(workflow_copy, kept_run)[0] == {}


@pytest.mark.case("10", "a change re-runs only what it affects (params, script, package code)")
@pytest.mark.parametrize(
    ("module", "rules"),
    [
        ("singlecell/features.py", {"features"}),
        ("measure/texture.py", {"features"}),
        ("segment/classical.py", {"segment"}),
        (
            "report/figures.py",
            {"image_figures", "overlays", "plate_overview", "experiment_figures"},
        ),
    ],
)
def test_editing_a_package_module_reruns_the_rules_using_it(workflow_copy, kept_run, module, rules):
    """A module of src/cellstrata edited: the rules whose scripts reach it re-run (their
    `code` parameter changed), with what reads their outputs; segmentation only for the
    segmentation code. The digest is of the code (a comment would change nothing): the edit is
    a statement that runs when the module is imported. Restored, nothing is left to do."""
    path = workflow_copy.parent / "src" / "cellstrata" / module
    with edited(path, "\nassert True\n"):
        counts, output = plan(workflow_copy, kept_run)
        assert triggered(output, "params have changed since last execution") == rules
        if module != "segment/classical.py":
            assert "segment" not in counts and "correct" not in counts, counts
        if rules == {"features"}:
            assert counts == FEATURES_AND_AFTER, counts
    assert plan(workflow_copy, kept_run)[0] == {}
