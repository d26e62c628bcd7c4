"""Reliability cases 1, 2 and 13 and the kill soak: jobs and Snakemake itself killed with
SIGKILL, a job that fails after writing, two runs on one workspace. Everything runs the
`snakemake` command line as a user types it, on the repository's Snakefile and the config of
the session's ``example_run`` (``example_config(small_example)``), so every resumed workspace
must end with tables and images equal to that uninterrupted run's.

Findings these tests pin down (see each test):

- Every output file is written through ``cellstrata.io.atomic_path``, so a kill leaves no
  partial file under a final name, only hidden ``.<name>.<random>.part`` temporaries (the
  next write of the same file removes them). A directory output (masks, corrected images)
  can be left half filled: Snakemake's incomplete markers name it, and its job's provenance
  record, written last, is missing.
- Snakemake reports as incomplete every existing output of a job it started and did not see
  end, also outputs that are whole: a job killed after writing everything but before
  Snakemake recorded its end. The ``pause-after-write`` fault
  (``cellstrata.workflow.failpoint.FAULT_VARIABLE``) holds a job at exactly that point.
- After SIGKILL of Snakemake its lock stays; the next run is refused with Snakemake's message
  naming ``--unlock``, the command README's *Resuming* paragraph documents.
- Found by the soak, fixed: a kill inside a job of a level with retention delete (the
  corrected images) left files without a provenance record, which the retention guard
  (``cellstrata.stewardship.dvc.check_retention``) took for kept data: every later run was
  refused, and ``cellstrata apply-retention`` (recorded files only) could not clear them.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import matplotlib.image
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
import tifffile
import yaml
from conftest import (
    FEATURES_AND_AFTER,
    REPO,
    assert_same_results,
    example_config,
    job_counts,
    main_version,
    snakemake_command,
)

from cellstrata.io import write_parquet
from cellstrata.workflow.failpoint import FAULT_VARIABLE, injected_fault

# The snakemake command of the environment running the tests (the Makefile's .venv).
# atomic_path's temporary names: tempfile.mkstemp(prefix=".<name>.", suffix=".part").
TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.part$")
# Hidden files Snakemake itself keeps in directory outputs.
SNAKEMAKE_FILES = {".snakemake_timestamp"}
LOCKED = "Directory cannot be locked"


# -- running snakemake ------------------------------------------------------------------------


def write_config(workdir: Path, config: dict) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    # Snakemake runs in the resolved directory; the job processes' paths are resolved paths.
    return workdir.resolve()


def environment(fault: str | None = None) -> dict[str, str]:
    # Unbuffered: a background run's output is read while it runs.
    env = {k: v for k, v in os.environ.items() if k != FAULT_VARIABLE}
    env["PYTHONUNBUFFERED"] = "1"
    if fault:
        env[FAULT_VARIABLE] = fault
    return env


def snakemake(workdir: Path, *args: str, fault: str | None = None):
    """Run `snakemake ...` to its end; stdout and stderr together in ``.output``."""
    result = subprocess.run(
        snakemake_command(workdir, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=environment(fault),
        timeout=600,
    )
    result.output = result.stdout
    return result


class Background:
    """`snakemake ...` started in its own process group (a terminal's job), so SIGKILL of the
    group kills Snakemake and every job it started, as a lost login session or a node
    failure does."""

    def __init__(self, workdir: Path, *args: str, fault: str | None = None):
        self.workdir = workdir
        # Beside the workspace, not in it: the output of each run, kept for a failure message.
        self.log_path = workdir.parent / f"snakemake-{time.monotonic_ns()}.out"
        self._log = open(self.log_path, "w")  # closed in close()
        self.process = subprocess.Popen(
            snakemake_command(workdir, *args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=environment(fault),
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float = 180):
        """Poll ``condition`` until it is true; fail, with the run's output, if the run ends
        first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if not self.running():
                pytest.fail(
                    f"the run ended (rc {self.process.returncode}) before {what}:\n"
                    + self.output[-4000:]
                )
            time.sleep(0.02)
        pytest.fail(f"no {what} within {timeout} s:\n" + self.output[-4000:])

    def kill_group(self) -> None:
        """SIGKILL Snakemake's whole process group; return once none of it is left."""
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        wait_group_gone(pgid)

    def finish(self, timeout: float = 600) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.running():
            self.kill_group()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_group_gone(pgid: int, timeout: float = 30) -> None:
    """Wait until no live process of group ``pgid`` is left (SIGKILL is asynchronous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for process in psutil.process_iter(["status"]):
            try:
                if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process.pid)
            except (ProcessLookupError, psutil.Error):
                continue
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes {alive} of group {pgid} outlived SIGKILL")


def job_scripts(workdir: Path) -> list[psutil.Process]:
    """The running script processes of ``workdir``'s jobs: Snakemake starts each script as
    ``python <workdir>/.snakemake/scripts/tmpXXXX.<rule>.py``."""
    scripts = str(workdir / ".snakemake" / "scripts") + os.sep
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(part.startswith(scripts) for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def job_process(workdir: Path, log: Path) -> psutil.Process | None:
    """The script process of the job whose log is ``log`` (its logging handler holds it
    open while the job runs)."""
    for process in job_scripts(workdir):
        try:
            if any(Path(f.path) == log for f in process.open_files()):
                return process
        except psutil.Error:
            continue
    return None


def running_rules(workdir: Path) -> list[str]:
    """Rules of the job scripts running in ``workdir`` (from the script names)."""
    rules = []
    for process in job_scripts(workdir):
        try:
            script = next(p for p in process.cmdline() if "/.snakemake/scripts/" in p)
        except (psutil.Error, StopIteration):
            continue
        rules.append(Path(script).name.split(".")[-2])
    return sorted(rules)


def locks(workdir: Path) -> list[Path]:
    return sorted((workdir / ".snakemake" / "locks").glob("*"))


# -- what a kill may leave ------------------------------------------------------------------


def read_whole(path: Path) -> None:
    """Read ``path`` to its end with the reader of its format; raises when it is cut short."""
    if path.suffix == ".parquet":
        pq.read_table(path)
    elif path.suffix in (".tif", ".tiff"):
        tifffile.imread(path)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".h5":
        with h5py.File(path, "r") as store:
            store.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
    elif path.suffix == ".png":
        matplotlib.image.imread(path)
    elif path.suffix == ".gz":
        gzip.decompress(path.read_bytes())
    elif path.suffix == ".txt":
        path.read_text()
    else:
        raise AssertionError(f"{path}: no reader for this kind of output; add one")


def check_results(workdir: Path) -> list[Path]:
    """Assert that every file under ``results/`` with a final name is whole (its reader reads
    it to the end) and every other file is named as atomic_path's temporary; return those."""
    temporary = []
    for path in sorted((workdir / "results").rglob("*")):
        if not path.is_file() or path.name in SNAKEMAKE_FILES:
            continue
        if path.name.startswith("."):
            assert TEMP_NAME.match(path.name), f"hidden file not named as a temporary: {path}"
            temporary.append(path)
            continue
        try:
            read_whole(path)
        except Exception as error:
            raise AssertionError(f"partial file under its final name: {path}: {error}") from error
    return temporary


def assert_resumed_identical(workdir: Path, reference: Path) -> None:
    """The resumed workspace: no temporary file left, every table and image equal to the
    uninterrupted run's."""
    assert check_results(workdir) == []
    assert assert_same_results(workdir, reference) > 0


@pytest.fixture(scope="module")
def version(small_example):
    return main_version(example_config(small_example))


@pytest.fixture
def workdir(small_example, tmp_path):
    """A fresh workspace with the config of ``example_run``."""
    return write_config(tmp_path / "run", example_config(small_example))


# -- case 1: kill -9 ------------------------------------------------------------------------


@pytest.mark.case("1", "kill -9 of a job or of Snakemake mid-write; resume")
def test_kill_job_script_mid_write(workdir, example_run, version):
    """SIGKILL of one job's script while it writes its masks: Snakemake reports the job
    failed, removes its half-filled output directory and exits non-zero; no partial file
    under a final name; the same command again resumes to the uninterrupted results."""
    masks = workdir / f"results/masks/{version}/SYN01/A01-A06"
    log = workdir / f"logs/segment/{version}/SYN01/A01-A06.log"
    with Background(workdir, "--cores", "2") as run:
        job = run.wait_for(
            lambda: len(list(masks.glob("*.tiff"))) >= 2 and job_process(workdir, log),
            "segment A01-A06 writing its masks",
        )
        written = len(list(masks.glob("*.tiff")))
        job.kill()
        assert run.finish() != 0
        output = run.output
    assert 0 < written < 36, "the kill must land while the masks are being written"
    assert "Error in rule segment" in output
    assert "Removing output files of failed job segment" in output
    assert not masks.exists()
    assert not (workdir / f"results/provenance/SYN01/segment/{version}/A01-A06.json").exists()
    check_results(workdir)
    # The other batch's segment job may or may not have finished before Snakemake stopped
    # (timing): what finished is never redone, what did not is done now.
    finished = len(list((workdir / f"results/provenance/SYN01/segment/{version}").glob("*.json")))

    resumed = snakemake(workdir, "--cores", "2")
    assert resumed.returncode == 0, resumed.output[-4000:]
    assert job_counts(resumed.output).get("segment") == FEATURES_AND_AFTER["features"] - finished
    assert_resumed_identical(workdir, example_run)


@pytest.mark.case("1", "kill -9 of a job or of Snakemake mid-write; resume")
def test_kill_snakemake_mid_write(workdir, example_run, version):
    """SIGKILL of Snakemake's process group while a segment job writes: every file under a
    final name is whole, the half-filled masks directory stays (its record, written last, is
    missing); the next run names it incomplete (without rerun-incomplete) or plans the job
    again (the workflow profile's rerun-incomplete); the stale lock is cleared with
    `snakemake --unlock`; the resumed results equal the uninterrupted run's."""
    masks = workdir / f"results/masks/{version}/SYN01/A01-A06"
    record = workdir / f"results/provenance/SYN01/segment/{version}/A01-A06.json"
    with Background(workdir, "--cores", "2") as run:
        run.wait_for(lambda: len(list(masks.glob("*.tiff"))) >= 2, "masks being written")
        run.kill_group()
    # Every file under a final name is whole, the directory is partial and unrecorded.
    check_results(workdir)
    assert 0 < len(list(masks.glob("*.tiff"))) < 36 and not record.exists()

    # Snakemake's markers (.snakemake/incomplete) name the directory: without the workflow
    # profile's rerun-incomplete the next run lists it as incomplete and stops; with it (the
    # plain command) the job is planned again. A dry run ignores the lock (it only warns).
    strict = snakemake(workdir, "-n", "--workflow-profile", "none")
    assert strict.returncode != 0
    assert "The files below seem to be incomplete" in strict.output
    assert "--rerun-incomplete" in strict.output
    incomplete = strict.output.split("Incomplete files:")[1].split()
    assert masks.relative_to(workdir).as_posix() in incomplete, strict.output[-4000:]
    dry = snakemake(workdir, "-n")
    assert dry.returncode == 0, dry.output[-4000:]
    planned = [block for block in dry.output.split("\n\n") if "rule segment:" in block]
    assert any("A01-A06" in block for block in planned), dry.output[-4000:]

    refused = snakemake(workdir, "--cores", "2")
    assert refused.returncode != 0 and LOCKED in refused.output and "--unlock" in refused.output
    unlock = snakemake(workdir, "--unlock")
    assert unlock.returncode == 0, unlock.output[-4000:]
    resumed = snakemake(workdir, "--cores", "2")
    assert resumed.returncode == 0, resumed.output[-4000:]
    assert_resumed_identical(workdir, example_run)


@pytest.mark.case("1", "kill -9 of a job or of Snakemake mid-write; resume")
def test_kill_snakemake_after_job_wrote_everything(workdir, example_run, version):
    """SIGKILL of Snakemake while a features job has written all its outputs but not ended
    (held there by the pause-after-write fault): the outputs are whole yet unconfirmed;
    without --rerun-incomplete the next run names them incomplete and stops, with the
    workflow profile's rerun-incomplete it plans the job again; the resumed results equal
    the uninterrupted run's."""
    outputs = [
        f"results/features/{version}/SYN01/A01-A06.parquet",
        f"results/provenance/SYN01/features/{version}/A01-A06.json",
    ]
    log = workdir / f"logs/features/{version}/SYN01/A01-A06.log"
    fault = "features/A01-A06:pause-after-write"
    with Background(workdir, "--cores", "2", fault=fault) as run:
        run.wait_for(
            lambda: log.exists() and "paused after writing" in log.read_text(), "the pause"
        )
        run.kill_group()
    check_results(workdir)
    assert all((workdir / path).is_file() for path in outputs)

    strict = snakemake(workdir, "-n", "--workflow-profile", "none")
    assert strict.returncode != 0
    assert "The files below seem to be incomplete" in strict.output
    assert "--rerun-incomplete" in strict.output
    assert all(path in strict.output for path in outputs), strict.output[-4000:]

    # profiles/default sets rerun-incomplete: the plain command plans the job again.
    dry = snakemake(workdir, "-n")
    assert dry.returncode == 0, dry.output[-4000:]
    planned = [block for block in dry.output.split("\n\n") if "rule features:" in block]
    assert any("A01-A06" in block for block in planned), dry.output[-4000:]

    assert snakemake(workdir, "--unlock").returncode == 0
    resumed = snakemake(workdir, "--cores", "2")
    assert resumed.returncode == 0, resumed.output[-4000:]
    assert_resumed_identical(workdir, example_run)


@pytest.mark.case("1", "kill -9 of a job or of Snakemake mid-write; resume")
def test_writer_killed_inside_atomic_path_leaves_only_a_temporary(tmp_path):
    """A process SIGKILLed while it writes through atomic_path leaves nothing under the final
    name, only its hidden temporary; the next successful write of that file removes it."""
    target = tmp_path / "results" / "table.parquet"
    writer = textwrap.dedent(
        f"""
        import os, signal
        from cellstrata.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half a table")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run([sys.executable, "-c", writer], env=environment())
    assert killed.returncode == -signal.SIGKILL
    assert not target.exists()
    (leftover,) = target.parent.iterdir()
    assert TEMP_NAME.match(leftover.name) and leftover.name.startswith(".table.parquet.")
    assert check_results(tmp_path) == [leftover]

    write_parquet(target, pd.DataFrame({"x": [1, 2]}))
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.parquet"]
    assert check_results(tmp_path) == []


# -- case 2: a job fails after writing -------------------------------------------------------


@pytest.mark.case("2", "job fails after writing: outputs removed, rerun redoes it")
def test_fault_specification():
    """CELLSTRATA_FAULT entries match a rule and, optionally, wildcard values; a mistyped
    entry fails loudly instead of never firing."""
    job = {"seg": "classical-1", "plate": "SYN01", "batch": "A01-A06"}
    assert injected_fault("features", job, "") is None
    assert injected_fault("features", job, "features:after-write") == "after-write"
    assert injected_fault("features", job, "features/A01-A06:after-write") == "after-write"
    assert injected_fault("features", job, "features/B01-B06:after-write") is None
    assert injected_fault("segment", job, "features:after-write") is None
    spec = "segment/SYN01:after-write, features/SYN01/A01-A06:pause-after-write"
    assert injected_fault("features", job, spec) == "pause-after-write"
    for bad in ("features", "features:after", ":after-write"):
        with pytest.raises(ValueError, match=FAULT_VARIABLE):
            injected_fault("features", job, bad)


@pytest.mark.case("2", "job fails after writing: outputs removed, rerun redoes it")
def test_job_failing_after_writing(workdir, example_run, version):
    """A features job raises after writing its table and its record (fault after-write):
    Snakemake removes both, the run exits non-zero (--keep-going finishes everything that
    does not need them); the next run redoes that job and runs only what could not run."""
    outputs = [
        workdir / f"results/features/{version}/SYN01/A01-A06.parquet",
        workdir / f"results/provenance/SYN01/features/{version}/A01-A06.json",
    ]
    failed = snakemake(
        workdir, "--cores", "2", "--keep-going", fault="features/A01-A06:after-write"
    )
    assert failed.returncode != 0
    assert "InjectedFault" in failed.output
    assert "Removing output files of failed job features" in failed.output
    assert not any(path.exists() for path in outputs)
    log = (workdir / f"logs/features/{version}/SYN01/A01-A06.log").read_text()
    # The job had written both before it failed.
    assert "provenance record" in log and "fault injected after writing" in log
    check_results(workdir)

    # What ran stays: the other batch's features, masks, crops, the image figures.
    done = [
        f"results/features/{version}/SYN01/B01-B06.parquet",
        f"results/masks/{version}/SYN01/A01-A06",
        f"results/crops/{version}/SYN01/A01-A06.h5",
        "results/figures/SYN01/illumination.png",
    ]
    assert all((workdir / path).exists() for path in done)
    dry = snakemake(workdir, "-n")
    assert dry.returncode == 0, dry.output[-4000:]
    plan = job_counts(dry.output)
    # The failed job once, and the jobs downstream of it that could not run; nothing that
    # finished (segment, correct, crops, the other features batch, ...).
    assert plan == {**FEATURES_AND_AFTER, "features": 1}, plan
    assert "A01-A06" in next(b for b in dry.output.split("\n\n") if "rule features:" in b)

    rerun = snakemake(workdir, "--cores", "2")
    assert rerun.returncode == 0, rerun.output[-4000:]
    assert job_counts(rerun.output) == plan
    assert_resumed_identical(workdir, example_run)


# -- case 13: two runs on one workspace, a stale lock ----------------------------------------


@pytest.mark.case("13", "concurrent runs refused by the lock; stale lock explained, cleared")
def test_second_run_refused_and_stale_lock_cleared(workdir, example_run):
    """While a run works, a second run on the same workspace is refused with Snakemake's
    lock message and touches nothing (the first ends with the uninterrupted results). After
    SIGKILL of a run its lock stays: the next run is refused with a message that says a kill
    may have left it and names --unlock; `snakemake --unlock` clears it."""
    with Background(workdir, "--cores", "2") as first:
        first.wait_for(lambda: locks(workdir) and job_scripts(workdir), "the lock and a job")
        second = snakemake(workdir, "--cores", "2")
        assert second.returncode != 0
        assert LOCKED in second.output and "no other Snakemake process" in second.output
        assert first.finish() == 0, first.output[-4000:]
    assert locks(workdir) == []
    assert_resumed_identical(workdir, example_run)

    # A stale lock: SIGKILL of a run that re-makes the summary.
    with Background(workdir, "--cores", "1", "--forcerun", "summary") as run:
        run.wait_for(lambda: locks(workdir), "the lock")
        run.kill_group()
    assert locks(workdir)
    refused = snakemake(workdir, "--cores", "2")
    assert refused.returncode != 0
    assert LOCKED in refused.output
    assert "kill signal" in refused.output and "--unlock" in refused.output
    unlock = snakemake(workdir, "--unlock")
    assert unlock.returncode == 0, unlock.output[-4000:]
    assert locks(workdir) == []
    after = snakemake(workdir, "--cores", "2")
    assert after.returncode == 0 and LOCKED not in after.output, after.output[-4000:]
    assert_resumed_identical(workdir, example_run)


# -- soak -------------------------------------------------------------------------------------

SOAK_KILLS = 10
SOAK_SEED = 20261121


@pytest.mark.case("soak", "10 random kill -9 of Snakemake's group, each resumed")
def test_kill_soak(workdir, example_run):
    """SIGKILL of Snakemake's process group at 10 seeded random points, chained on one
    workspace, each followed by the documented resume (`snakemake --unlock` when locked, then
    the same command): after every kill each file under a final name is whole; the last
    resume ends with the uninterrupted run's results.

    A kill point is a random 1-2 jobs finished in that run plus a random 0-1.5 s, with a job
    running: a restart repeats the DAG build and the killed jobs, so kills at random times
    from the start would mostly fall in the first jobs; this way they walk through the
    chain (images, segmentation, features, profiles)."""
    rng = random.Random(SOAK_SEED)
    kills = []
    for _ in range(SOAK_KILLS):
        if locks(workdir):
            unlock = snakemake(workdir, "--unlock")
            assert unlock.returncode == 0, unlock.output[-4000:]
        after_jobs, delay = rng.randint(1, 2), rng.uniform(0.0, 1.5)
        with Background(workdir, "--cores", "2") as run:

            def kill_point(run=run, after_jobs=after_jobs):
                finished = run.output.count("Finished jobid")
                return finished >= after_jobs and job_scripts(workdir)

            deadline = time.monotonic() + 180
            while run.running() and not kill_point():
                assert time.monotonic() < deadline, run.output[-4000:]
                time.sleep(0.02)
            if not run.running():
                # The chain finished before this kill point: nothing left to interrupt.
                assert run.process.returncode == 0, run.output[-4000:]
                break
            time.sleep(delay)
            rules = running_rules(workdir)
            run.kill_group()
        kills.append((after_jobs, round(delay, 2), rules))
        check_results(workdir)
    print(f"soak kills (jobs finished, delay, rules running at the kill): {kills}")
    assert len(kills) == SOAK_KILLS, kills
    assert sum(bool(rules) for *_, rules in kills) >= SOAK_KILLS // 2, kills

    if locks(workdir):
        assert snakemake(workdir, "--unlock").returncode == 0
    final = snakemake(workdir, "--cores", "2")
    assert final.returncode == 0, final.output[-4000:]
    assert_resumed_identical(workdir, example_run)
