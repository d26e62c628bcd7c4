"""The storage-solutions table: each place data can live (lab disks, the cluster, cloud, IDR,
Zenodo, Figshare, GitHub, ..., immediate deletion) with its access, longevity, version
control, speed, size limits and cost.

A cost may be a range ``[low, high]`` (the playbook's "$0.02-0.04/GB-month"): every figure here
is a (low, high) pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cellstrata.config import ConfigError, schema_default

GB = 1e9
TB = 1e12
#: Longevity, shortest first.
LONGEVITY = ("none", "low", "intermediate", "high")
#: Size limits and the words that name them in a reason.
LIMITS = {
    "limit_gb_file": "per file",
    "limit_gb_dataset": "per dataset",
    "limit_gb_total": "total",
}


def solutions(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The lab's table: the schema's default entries, each updated with the attributes the
    config gives it, and the config's own entries."""
    table = {name: dict(entry) for name, entry in schema_default("storage", "solutions").items()}
    for name, entry in config["storage"].get("solutions", {}).items():
        table[name] = {**table.get(name, {}), **entry}
    return table


def remote_solution(config: Mapping[str, Any], remote: str) -> str:
    """The solution a remote is (``storage.remotes.<remote>.solution``)."""
    return config["storage"]["remotes"][remote]["solution"]


def remote_access(config: Mapping[str, Any], remote: str) -> str:
    """Who can read a remote: its own ``access``, else its solution's."""
    entry = config["storage"]["remotes"][remote]
    return entry.get("access") or solutions(config)[entry["solution"]].get("access", "private")


def check_solutions(config: Mapping[str, Any]) -> None:
    """Every solution has the attributes advice and refusals read; every remote has a URL and
    names a solution of the table.

    Raises
    ------
    ConfigError
        Naming the key.
    """
    table = solutions(config)
    for name, entry in table.items():
        missing = [k for k in ("access", "longevity", "speed") if k not in entry]
        if missing:
            raise ConfigError(
                f"storage.solutions.{name}: a new solution needs {', '.join(missing)}"
            )
    workspace = config["storage"]["workspace_solution"]
    if workspace not in table:
        raise ConfigError(
            f"storage.workspace_solution {workspace!r} is not a storage solution {sorted(table)}"
        )
    remotes = config["storage"]["remotes"]
    for name in ("default", "archive"):  # given in part: the rest from the schema's default
        given = {k: v for k, v in remotes[name].items() if v is not None}
        remotes[name] = {"access": None, **schema_default("storage", "remotes", name), **given}
    for name, remote in remotes.items():
        where = f"storage.remotes.{name}"
        if not remote.get("url"):
            raise ConfigError(f"{where}: needs a url (a directory, s3://bucket/path, ...)")
        if remote.get("solution") not in table:
            raise ConfigError(
                f"{where}.solution {remote.get('solution')!r} is not a storage solution; one "
                f"of {sorted(table)} or a new entry of storage.solutions"
            )


def cost(
    solution: Mapping[str, Any], size: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """One-time and monthly USD of ``size`` bytes there: ``((once_low, once_high),
    (monthly_low, monthly_high))``; the cost over a horizon is once + months x monthly."""

    def pair(key: str) -> tuple[float, float]:
        value = solution.get(key)
        if value is None:
            return 0.0, 0.0
        return (float(value[0]), float(value[1])) if isinstance(value, list) else (value, value)

    tb, dataset, gb, flat = (
        pair(k) for k in ("per_tb_once", "per_dataset_once", "per_gb_month", "per_month")
    )
    once = tuple(tb[i] * size / TB + (dataset[i] if size else 0.0) for i in (0, 1))
    monthly = tuple(gb[i] * size / GB + (flat[i] if size else 0.0) for i in (0, 1))
    return once, monthly  # type: ignore[return-value]


def limit_problems(
    name: str,
    solution: Mapping[str, Any],
    *,
    size: float,
    largest_file: float,
    total: float,
) -> list[str]:
    """What of a dataset of ``size`` bytes (largest file ``largest_file``) breaks the limits of
    solution ``name``, ``total`` bytes being all this workspace puts there, e.g.
    ``figshare: 20.0 GB total < 1.4 TB``."""
    problems = []
    for key, words in LIMITS.items():
        limit = solution.get(key)
        amount = {"limit_gb_file": largest_file, "limit_gb_dataset": size}.get(key, total)
        if limit is not None and amount > limit * GB:
            problems.append(f"{name}: {human_size(limit * GB)} {words} < {human_size(amount)}")
    smallest = solution.get("min_gb_dataset")
    if smallest is not None and size < smallest * GB:
        problems.append(
            f"{name}: datasets of {human_size(smallest * GB)} and more, this one {human_size(size)}"
        )
    return problems


def need_problems(name: str, solution: Mapping[str, Any], need: Mapping[str, Any]) -> list[str]:
    """What a level needs (speed, longevity, version control) that solution ``name`` lacks."""
    problems = []
    if need.get("speed") == "instant" and solution["speed"] != "instant":
        problems.append(f"{name}: {solution['speed']} speed, level used in place (instant)")
    wanted = need.get("longevity", "none")
    if LONGEVITY.index(solution["longevity"]) < LONGEVITY.index(wanted):
        problems.append(f"{name}: longevity {solution['longevity']} < {wanted}")
    if need.get("version_control") and not (
        solution.get("version_control") or solution.get("dvc_remote")
    ):
        problems.append(f"{name}: no version control (neither its own nor through DVC)")
    return problems


def human_size(size: float) -> str:
    """Bytes as a short decimal figure, e.g. ``12.3 MB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
