"""Cluster execution: the profiles, their installation, and the Slurm profile on a real Slurm."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, assert_same_results, example_config, main_version, snakemake_command
from slurmcluster import CPU_PARTITION, GPU_PARTITION, jobs, local_slurm, unavailable

from cellstrata.cli import main
from cellstrata.workflow.cluster import gpu_gres, install_profile, unset_variables


def snakemake(workdir: Path, *args: str, env: dict | None = None, cwd: Path | None = None):
    """The `snakemake` command line, as a user types it, on the repository's Snakefile."""
    return subprocess.run(
        snakemake_command(workdir, *args),
        capture_output=True,
        text=True,
        env=env or os.environ.copy(),
        cwd=cwd or REPO,
    )


def _failure(job: dict, log: Path) -> str:
    """What Slurm and the job's own log say of a job that did not complete."""
    text = log.read_text()[-4000:] if log.exists() else f"no log at {log}"
    fields = {key: job.get(key) for key in ("JobId", "JobName", "JobState", "Reason", "ExitCode")}
    return f"{fields}\n{text}"


def write_config(workdir: Path, config: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def test_install_profile_where_snakemake_finds_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["profile", "install", "slurm"]) == 0
    installed = tmp_path / "xdg" / "snakemake" / "slurm"
    assert "installed" in capsys.readouterr().out
    assert (installed / "config.yaml").read_text() == (
        REPO / "profiles/slurm/config.yaml"
    ).read_text()
    assert (installed / "partitions.yaml").exists()
    # Again: nothing to do. Edited by hand: kept unless --force.
    assert main(["profile", "install", "slurm"]) == 0
    assert "up to date" in capsys.readouterr().out
    (installed / "config.yaml").write_text("jobs: 1\n")
    assert main(["profile", "install", "slurm"]) == 1
    assert "differs" in capsys.readouterr().err
    assert (installed / "config.yaml").read_text() == "jobs: 1\n"
    assert main(["profile", "install", "slurm", "--force"]) == 0
    assert "replaced" in capsys.readouterr().out
    assert main(["profile", "install", "nosuch"]) == 1
    assert "profiles there: ['default', 'local', 'slurm']" in capsys.readouterr().err


def test_install_profile_dest(tmp_path):
    target, action = install_profile("local", dest=tmp_path / "p")
    assert action == "installed" and (target / "config.yaml").exists()


def test_failed_forced_install_keeps_the_edited_profile(tmp_path, monkeypatch):
    target, _ = install_profile("slurm", dest=tmp_path / "slurm")
    (target / "config.yaml").write_text("jobs: 1  # the lab's own edit\n")

    def copy_then_fail(source, destination, **kwargs):
        shutil.copy(Path(source) / "config.yaml", destination)
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copytree", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        install_profile("slurm", dest=target, force=True)
    assert (target / "config.yaml").read_text() == "jobs: 1  # the lab's own edit\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurm"]  # no half copy left


@pytest.mark.workflow
@pytest.mark.parametrize("profile", ["slurm", "profiles/slurm"])
def test_bare_profile_name_resolves_after_install(small_example, tmp_path, profile):
    """`snakemake --profile slurm`, the lab's literal command, and `--profile profiles/slurm`."""
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg"), SBATCH_ACCOUNT="lab-a")
    write_config(tmp_path / "run", example_config(small_example))
    before = snakemake(tmp_path / "run", "-n", "--profile", "slurm", env=env)
    if profile == "slurm":
        assert before.returncode != 0 and "profile" in before.stdout + before.stderr
        install_profile("slurm", dest=tmp_path / "xdg" / "snakemake" / "slurm")
    result = snakemake(tmp_path / "run", "-n", "--profile", profile, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # The profile's resources reach the jobs: the account from the environment.
    assert "slurm_account=lab-a" in result.stdout
    assert "rule segment" in result.stdout


@pytest.mark.workflow
def test_unset_account_variable_is_named(small_example, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SBATCH_ACCOUNT"}
    write_config(tmp_path / "run", example_config(small_example))
    result = snakemake(tmp_path / "run", "-n", "--profile", "profiles/slurm", env=env)
    assert result.returncode != 0
    # Snakemake 9 prints a Snakefile's exception on stdout.
    assert "slurm_account needs $SBATCH_ACCOUNT, which is not set" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "results").exists()


def test_unset_variables():
    os.environ.pop("CELLSTRATA_NO_SUCH_VAR", None)
    args = ["slurm_account=$CELLSTRATA_NO_SUCH_VAR", "mem_mb=100", "runtime=${HOME}"]
    assert unset_variables(args) == {"slurm_account": ["CELLSTRATA_NO_SUCH_VAR"]}


def test_gpu_gres():
    assert gpu_gres(0) == "" and gpu_gres(2) == "gpu:2"


@pytest.mark.workflow
def test_gpu_rules_ask_for_gres_under_the_slurm_profile(small_example, tmp_path):
    """A cellpose version with gpu on asks Slurm for a GPU as GRES, the classical one not."""
    config = example_config(small_example)
    config["segmentation"]["extra_versions"] = [
        {"method": "cellpose", "cellpose": {"gpu": True, "model": "nuclei"}}
    ]
    write_config(tmp_path / "run", config)
    env = dict(os.environ, SBATCH_ACCOUNT="lab-a")
    result = snakemake(tmp_path / "run", "-n", "--profile", "profiles/slurm", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    blocks = result.stdout.split("\n\n")
    segment = [b for b in blocks if "rule segment:" in b]
    cellpose = [b for b in segment if "seg=cellpose" in b]
    classical = [b for b in segment if "seg=classical" in b]
    assert cellpose and classical
    assert all("gres=gpu:1" in b and "gpu=0" in b for b in cellpose)
    assert not any("gres=gpu" in b for b in classical)


def _rule(job: dict) -> str:
    """The rule of a job the Slurm profile submitted, from its log path (rule_<rule>/...)."""
    return Path(job["StdOut"]).parent.parent.name.removeprefix("rule_")


@pytest.mark.slurm
@pytest.mark.workflow
def test_slurm_profile_on_a_real_slurm(small_example, example_run, tmp_path):
    """The example through `--profile profiles/slurm` on a one-node Slurm on localhost: every
    job goes through sbatch, the outputs equal the local run's, GPU jobs go to the GPU
    partition with a GRES."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path / "run"
    write_config(workdir, example_config(small_example))
    partitions = tmp_path / "partitions.yaml"
    partitions.write_text(
        yaml.safe_dump(
            {"partitions": {CPU_PARTITION: {"max_gpu": 0}, GPU_PARTITION: {"max_gpu": 1}}}
        )
    )
    # What a lab changes for another cluster: its partitions, and here no account (no
    # accounting database; the plugin would check the account with sacctmgr) and status by
    # squeue. Short status polling keeps the test quick.
    local = [
        "--profile",
        "profiles/slurm",
        "--slurm-partition-config",
        str(partitions),
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--latency-wait",
        "5",
    ]
    with local_slurm(tmp_path / "slurm") as env:
        env["SBATCH_ACCOUNT"] = ""
        result = snakemake(workdir, *local, env=env)
        assert result.returncode == 0, result.stderr[-5000:]
        submitted = jobs(env)
        # Every non-local job went through sbatch, ran on the local node and completed;
        # its Slurm log is where the profile puts it.
        rules = {_rule(job) for job in submitted}
        assert {"ingest", "correct", "segment", "features", "profiles", "quality"} <= rules
        assert len(submitted) == len(list((workdir / "logs/slurm").rglob("*.log")))
        for job in submitted:
            log = Path(job["StdOut"])
            assert job["JobState"] == "COMPLETED", _failure(job, log)
            assert job["Partition"] == CPU_PARTITION
            assert log.is_relative_to(workdir / "logs/slurm") and log.name == f"{job['JobId']}.log"
            assert "Finished jobid" in log.read_text()
        assert assert_same_results(workdir, example_run) > 10

        # GPU routing: a segment job that asks for a GPU goes to the GPU partition with the
        # GRES (the classical method asks for none; the cellpose test above shows which do).
        version = main_version(example_config(small_example))
        target = f"results/masks/{version}/SYN01/A01-A06"
        rerun = snakemake(
            workdir, *local, "--set-resources", "segment:gres='gpu:1'", "--force", target, env=env
        )
        assert rerun.returncode == 0, rerun.stderr[-5000:]
        # The corrected images (retention delete) are made again first, on a CPU node.
        before = {job["JobId"] for job in submitted}
        rerun_jobs = {_rule(job): job for job in jobs(env) if job["JobId"] not in before}
        assert sorted(rerun_jobs) == ["correct", "segment"]
        assert rerun_jobs["correct"]["Partition"] == CPU_PARTITION
        gpu_jobs = [rerun_jobs["segment"]]
        assert gpu_jobs[0]["Partition"] == GPU_PARTITION
        tres = gpu_jobs[0].get("TresPerNode", "") + gpu_jobs[0].get("TresPerJob", "")
        assert "gres:gpu:1" in tres
        assert gpu_jobs[0]["JobState"] == "COMPLETED"
        assert assert_same_results(workdir, example_run) > 10
    # Torn down: no daemon of the test cluster left, Slurm's default config path free again.
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "slurm")], capture_output=True, text=True)
    assert left.stdout == ""
    assert unavailable() is None
