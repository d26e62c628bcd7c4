"""Cluster execution: installing the workflow's Snakemake profiles, checking their settings.

The lab's command is ``snakemake --profile slurm``. Snakemake resolves a bare profile name
against the working directory and then the user's and the site's Snakemake config directories
(``$XDG_CONFIG_HOME/snakemake``, ``/etc/xdg/snakemake``), so ``profiles/slurm`` of this
repository is found only as ``--profile profiles/slurm``; :func:`install_profile` places a copy
where the bare name is found.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

#: The repository that holds this package (an editable install, as the Makefile makes).
REPOSITORY = Path(__file__).resolve().parents[3]

_UNSET_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def user_profile_dir() -> Path:
    """Snakemake's per-user profile directory, from Snakemake's own lookup."""
    from snakemake.common import get_appdirs

    return Path(get_appdirs().user_config_dir)


def _same_tree(left: Path, right: Path) -> bool:
    compare = filecmp.dircmp(left, right)
    if compare.left_only or compare.right_only or compare.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, compare.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(left / sub, right / sub) for sub in compare.common_dirs)


def install_profile(
    name: str,
    *,
    source: str | os.PathLike | None = None,
    dest: str | os.PathLike | None = None,
    force: bool = False,
) -> tuple[Path, str]:
    """Copy the workflow's profile ``profiles/<name>`` into Snakemake's user profile directory.

    Parameters
    ----------
    name
        Profile name, a directory under ``profiles/`` of the workflow (``slurm``, ``local``).
    source
        The workflow directory holding ``profiles/``; default: this package's repository.
    dest
        Where the profile directory goes; default: ``<user_profile_dir()>/<name>``.
    force
        Replace an installed profile that differs from the source.

    Returns
    -------
    tuple of (Path, str)
        The installed directory and what happened: ``installed``, ``up to date`` or
        ``replaced``.

    Raises
    ------
    FileNotFoundError
        No such profile in the workflow.
    FileExistsError
        An installed profile of that name differs from the source and ``force`` is not set
        (it may hold the user's own edits).
    """
    profiles = Path(source or REPOSITORY) / "profiles"
    origin = profiles / name
    if not (origin / "config.yaml").is_file():
        known = sorted(p.name for p in profiles.iterdir() if (p / "config.yaml").is_file())
        raise FileNotFoundError(f"no profile {name!r} in {profiles} (profiles there: {known})")
    target = Path(dest) if dest else user_profile_dir() / name
    if target.exists():
        if _same_tree(origin, target):
            return target, "up to date"
        if not force:
            raise FileExistsError(
                f"{target} exists and differs from {origin} (edited by hand, or from an older "
                "checkout); rerun with --force to replace it"
            )
        action = "replaced"
    else:
        action = "installed"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Copied beside the target, then swapped in: an install that fails or is killed mid-copy
    # leaves the old profile (perhaps the user's edits) whole, never a half-copied one.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copytree(origin, staging, dirs_exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target, action


def unset_variables(resource_args: Iterable[str]) -> dict[str, list[str]]:
    """Default resources (``name=value`` as Snakemake holds them) whose value names an
    environment variable that is not set.

    A profile's ``slurm_account: $SBATCH_ACCOUNT`` is expanded when each job's resources
    are evaluated; an unset variable would reach sbatch as the literal ``$SBATCH_ACCOUNT``.

    Returns
    -------
    dict
        Resource name to the unset variable names it refers to.
    """
    missing = {}
    for arg in resource_args:
        name, _, value = arg.partition("=")
        names = [v for v in _UNSET_VARIABLE.findall(value) if v not in os.environ]
        if names:
            missing[name.strip()] = names
    return missing


def check_profile_environment(resource_args: Iterable[str]) -> None:
    """Raise a ValueError naming each default resource whose environment variable is unset."""
    missing = unset_variables(resource_args)
    if not missing:
        return
    message = "; ".join(
        f"default resource {name} needs ${', $'.join(names)}, which is not set"
        for name, names in missing.items()
    )
    if any("SBATCH_ACCOUNT" in names for names in missing.values()):
        message += (
            " (export SBATCH_ACCOUNT=<your Slurm allocation> before running; on Alpine: "
            "ucb-general for CU Boulder, rmacc-general for RMACC members, or your project's; "
            "`sacctmgr -p show associations user=$USER` lists yours)"
        )
    raise ValueError(message)


def gpu_gres(gpus: int) -> str:
    """A GPU count as a Slurm GRES request (``gpu:1``); empty for none."""
    return f"gpu:{gpus}" if gpus else ""
