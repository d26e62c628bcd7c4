"""A real one-node Slurm cluster on localhost for the profile tests.

Debian's slurm-wlm and munge (the Makefile's test setup installs them): munged, slurmctld and
slurmd run from a temp directory with their own ports, key, state and logs, so nothing of the
machine's own Slurm set-up (if any) is touched; clients find the cluster through SLURM_CONF.
No accounting database: the executor plugin reads job states with squeue, which keeps
finished jobs for MinJobAge seconds.

The configuration goes to Slurm's default path, /etc/slurm/slurm.conf, and not only to
SLURM_CONF: snakemake-executor-plugin-slurm-jobstep (0.6.1) removes every SLURM_* variable but
the job's identity from the environment of the srun it starts inside the job, SLURM_CONF
included, and that srun then fails with "Could not establish a configuration source". A
cluster whose configuration sits at the default path (Alpine's, every production one) is not
affected; no upstream issue found. The test refuses to touch an /etc/slurm/slurm.conf it did
not write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from s3server import free_port

#: The daemons and clients the cluster needs.
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "srun")
# The daemons live in /usr/sbin, which a non-login PATH may lack.
_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])

#: Partitions of the local cluster: CPU jobs, and jobs that ask for a GPU (a GRES on /dev/null:
#: Slurm schedules it and sets CUDA_VISIBLE_DEVICES like for a GPU; nothing is attached).
CPU_PARTITION = "local-cpu"
GPU_PARTITION = "local-gpu"
NODE = "localnode"
#: Where Slurm's clients look when SLURM_CONF is not set.
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
_MARK = "# cellstrata test cluster (tests/slurmcluster.py); removed when the test ends\n"

_CONF = """\
{mark}ClusterName=cellstrata-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser={user}
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue (the plugin's status command without slurmdbd).
MinJobAge=3600
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} Gres=gpu:1 State=UNKNOWN
PartitionName={cpu_partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName={gpu_partition} Nodes={node} MaxTime=INFINITE State=UP
"""


def unavailable() -> str | None:
    """Why a local cluster cannot be started here, or None."""
    missing = [name for name in BINARIES if shutil.which(name, path=_PATH) is None]
    if missing:
        return f"Slurm/munge programs not installed: {', '.join(missing)} (make test installs them)"
    if DEFAULT_CONF.exists() and not DEFAULT_CONF.read_text().startswith(_MARK):
        return f"{DEFAULT_CONF} belongs to a real Slurm set-up; the test does not touch it"
    if not os.access(DEFAULT_CONF.parent if DEFAULT_CONF.parent.exists() else "/etc", os.W_OK):
        return f"cannot write {DEFAULT_CONF} (the test cluster needs root)"
    return None


def _which(name: str) -> str:
    found = shutil.which(name, path=_PATH)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install Debian's slurm-wlm and munge")
    return found


def _user() -> str:
    return os.environ.get("USER") or subprocess.check_output(["id", "-un"], text=True).strip()


def _stop(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    with contextlib.suppress(ValueError, ProcessLookupError):
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def local_slurm(root: Path, *, cpus: int = 2, memory_mb: int = 8000) -> Iterator[dict]:
    """Start munged, slurmctld and slurmd under ``root``; yield the environment for clients.

    Torn down on exit: running jobs cancelled, the three daemons stopped. The yielded
    environment is ``os.environ`` plus SLURM_CONF (and /usr/sbin on PATH).
    """
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(exist_ok=True)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = DEFAULT_CONF
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        _CONF.format(
            mark=_MARK,
            host=os.uname().nodename,
            ctld_port=free_port(),
            d_port=free_port(),
            user=os.environ.get("USER")
            or subprocess.check_output(["id", "-un"], text=True).strip(),
            root=root,
            node=NODE,
            cpus=cpus,
            memory=memory_mb,
            cpu_partition=CPU_PARTITION,
            gpu_partition=GPU_PARTITION,
        )
    )
    (conf.parent / "gres.conf").write_text(_MARK + f"NodeName={NODE} Name=gpu File=/dev/null\n")
    env = dict(os.environ, SLURM_CONF=str(conf))
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin"])
    # --force: munged refuses to run as root otherwise (the test machine's CI runs as root).
    subprocess.run(
        [
            _which("munged"),
            "--force",
            f"--socket={root}/munge.sock",
            f"--key-file={key}",
            f"--pid-file={root}/munged.pid",
            f"--log-file={root}/log/munged.log",
            f"--seed-file={root}/munge.seed",
        ],
        check=True,
        env=env,
    )
    try:
        subprocess.run([_which("slurmctld"), "-f", str(conf)], check=True, env=env)
        subprocess.run([_which("slurmd"), "-f", str(conf), "-N", NODE], check=True, env=env)
        _wait_idle(env, root)
        yield env
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["scancel", "--full", "--user", _user()], env=env)
        for daemon in ("slurmd", "slurmctld", "munged"):
            _stop(root / f"{daemon}.pid")
        for path in (conf, conf.parent / "gres.conf"):
            if path.exists() and path.read_text().startswith(_MARK):
                path.unlink()


def _wait_idle(env: dict, root: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["sinfo", "--noheader", "--nodes", NODE, "--format", "%t"],
            capture_output=True,
            text=True,
            env=env,
        ).stdout.split()
        if state and state[0] == "idle":
            return
        time.sleep(0.5)
    logs = "\n".join(
        path.read_text()[-2000:] for path in sorted((root / "log").glob("*.log")) if path.exists()
    )
    raise RuntimeError(f"local Slurm node did not become idle in {timeout} s:\n{logs}")


def jobs(env: dict) -> list[dict]:
    """Every job the cluster knows, as ``scontrol show job`` describes it (JobId, JobName,
    JobState, Partition, Account, TresPerJob, StdOut, ...)."""
    out = subprocess.run(
        ["scontrol", "--oneliner", "show", "job"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    described = []
    for line in out.splitlines():
        if line.strip() and not line.startswith("No jobs"):
            described.append(dict(field.split("=", 1) for field in line.split() if "=" in field))
    return described
