"""Reprocessing planned before it runs: what a new config would make in this workspace, how
many jobs of each rule (Snakemake's own dry run), the core-hours they would take (the job
times this workspace's provenance recorded), which archived or deleted data must be restored or
remade first, and the storage the new outputs add per month."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from cellstrata.levels import LEVEL_PATHS, level_path, retention_kind
from cellstrata.stewardship.lifecycle import holding_output
from cellstrata.stewardship.provenance import RULE_LEVELS, read_records
from cellstrata.stewardship.solutions import GB, remote_solution, solutions
from cellstrata.stewardship.tracked import StewardshipError, tracked_outputs

_JOB = re.compile(r"^(?:local)?rule (\S+):$")
_FIELD = re.compile(r"^\s+(input|wildcards|threads|resources): (.*)$")


def dry_run(
    configfile: str | os.PathLike, workspace: str | os.PathLike, snakefile: str | os.PathLike
) -> str:
    """What ``snakemake -n`` prints for ``configfile`` in ``workspace``."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workspace),
        "--configfile",
        str(Path(configfile).resolve()),
        "--cores",
        "1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    said = result.stdout + result.stderr
    if result.returncode != 0:
        raise StewardshipError(f"snakemake -n with {configfile} failed:\n{said[-4000:]}")
    return said


def planned_jobs(output: str) -> list[dict[str, Any]]:
    """The jobs a dry run printed: rule, wildcards, threads, inputs, declared runtime (min)
    and GPUs."""
    jobs: list[dict[str, Any]] = []
    for line in output.splitlines():
        started = _JOB.match(line)
        if started:
            jobs.append({"rule": started[1], "wildcards": {}, "threads": 1, "inputs": []})
            continue
        field = _FIELD.match(line)
        if not jobs or field is None:
            continue
        key, value = field.groups()
        job = jobs[-1]
        if key == "wildcards":
            job["wildcards"] = dict(p.split("=", 1) for p in value.split(", ") if "=" in p)
        elif key == "threads":
            job["threads"] = int(value)
        elif key == "input":
            job["inputs"] = value.split(", ")
        else:
            resources = dict(p.split("=", 1) for p in value.split(", ") if "=" in p)
            job["runtime_min"] = float(resources.get("runtime", 0) or 0)
            job["gpus"] = int(resources.get("gpu", 0) or 0)
    return jobs


def _method(wildcards: Mapping[str, str]) -> str | None:
    seg = wildcards.get("seg")
    return seg.split("-")[0] if seg else None


def site_counts(workspace: str | os.PathLike, plates: Sequence[str]) -> Any:
    """A function of a job's wildcards giving the sites it covers: its batch's sites, its
    plate's, or every plate's (a job over the experiment), from the plates' manifests; None
    when a manifest is missing."""
    sites: dict[str, pd.DataFrame] = {}
    for plate in plates:
        path = Path(workspace, level_path("manifest", plate, None))
        if path.is_file():
            manifest = pd.read_parquet(path, columns=["Metadata_Well", "Metadata_Site", "batch"])
            sites[plate] = manifest.drop_duplicates(["Metadata_Well", "Metadata_Site"])

    def count(wildcards: Mapping[str, str]) -> int | None:
        plate = wildcards.get("plate")
        if plate is None:
            return sum(len(f) for f in sites.values()) if len(sites) == len(plates) else None
        if plate not in sites:
            return None
        frame = sites[plate]
        if "batch" in wildcards:
            frame = frame[frame["batch"] == wildcards["batch"]]
        return len(frame) or None

    return count


def recorded_seconds(
    records: Sequence[Mapping[str, Any]], sites: Any
) -> dict[tuple[str, str | None], list[tuple[float, int | None]]]:
    """Recorded wall seconds and sites of every job, by (rule, segmentation method)."""
    found: dict[tuple[str, str | None], list[tuple[float, int | None]]] = {}
    for record in records:
        seconds = (
            datetime.fromisoformat(record["end"]) - datetime.fromisoformat(record["start"])
        ).total_seconds()
        wildcards = record.get("wildcards", {})
        key = (record["rule"], _method(wildcards))
        found.setdefault(key, []).append((seconds, sites(wildcards)))
    return found


def _benchmarked_seconds(workspace: Path, rule: str) -> list[float]:
    """Seconds of the rule's jobs in Snakemake's benchmark files (``logs/benchmark/<rule>``)."""
    seconds = []
    for path in sorted(Path(workspace, "logs/benchmark", rule).rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        seconds += [float(s) for s in table["s"]]
    return seconds


def _estimate(
    job: Mapping[str, Any],
    recorded: Mapping[tuple[str, str | None], list],
    workspace: Path,
    sites: Any,
) -> tuple[float, str]:
    """Core-seconds of one planned job and where the figure comes from: the rule's recorded
    seconds per site times the job's sites (per job where sites are unknown), times its
    threads."""
    rule, method = job["rule"], _method(job["wildcards"])
    times = recorded.get((rule, method)) or [
        t for (r, _), values in recorded.items() if r == rule for t in values
    ]
    planned = sites(job["wildcards"])
    counted = [(s, n) for s, n in times if n]
    if counted and planned:
        per_site = sum(s for s, _ in counted) / sum(n for _, n in counted)
        return per_site * planned * job["threads"], "recorded (per site)"
    seconds = [s for s, _ in times]
    source = "recorded (per job)"
    if not seconds:
        seconds, source = _benchmarked_seconds(workspace, rule), "benchmark files (per job)"
    if not seconds and job.get("runtime_min"):
        return job["runtime_min"] * 60 * job["threads"], "declared runtime (upper bound)"
    if not seconds:
        return 0.0, "no record (figures, bookkeeping: seconds)"
    return sum(seconds) / len(seconds) * job["threads"], source


def plan_reprocess(
    new_config: Mapping[str, Any],
    configfile: str | os.PathLike,
    workspace: str | os.PathLike = ".",
    *,
    snakefile: str | os.PathLike,
) -> dict[str, Any]:
    """The plan of running ``new_config`` (read from ``configfile``) in ``workspace``.

    Returns
    -------
    dict
        ``jobs``: per rule and segmentation version, the jobs Snakemake would run, their
        estimated core-hours (and GPU-hours), the estimate's source; ``versions``: the levels
        and method versions that would be made, new or made again; ``restore``: archived or
        deleted inputs of those jobs, with bytes and retrieval cost (the storage table's
        ``per_gb_retrieval``) or the rule that remakes them; ``storage``: the bytes and monthly
        cost the new versions' outputs add (sized as the workspace's current versions of the
        same plate and level), and ``totals``.
    """
    from cellstrata.stewardship.status import status
    from cellstrata.stewardship.storage import _cost, storage_plan

    workspace = Path(workspace)
    output = dry_run(configfile, workspace, snakefile)
    jobs = planned_jobs(output)
    sites = site_counts(workspace, [p["name"] for p in new_config["plates"]])
    recorded = recorded_seconds(read_records(workspace / "results"), sites)
    rows: dict[tuple[str, str | None], dict[str, Any]] = {}
    for job in jobs:
        seconds, source = _estimate(job, recorded, workspace, sites)
        key = (job["rule"], job["wildcards"].get("seg"))
        row = rows.setdefault(
            key,
            {
                "rule": key[0],
                "version": key[1],
                "level": RULE_LEVELS.get(key[0]),
                "jobs": 0,
                "core_hours": 0.0,
                "gpu_hours": 0.0,
                "source": source,
            },
        )
        row["jobs"] += 1
        row["core_hours"] += seconds / 3600
        row["gpu_hours"] += seconds / 3600 / job["threads"] * job.get("gpus", 0)
    state = status(new_config, workspace)
    held = {
        (r.plate, r.level, r.version): r
        for r in state.itertuples()
        if r.state in {"present", "archived", "on remote", "deleted"}
    }
    made = {}
    for job in jobs:
        level, plate = RULE_LEVELS.get(job["rule"]), job["wildcards"].get("plate")
        if level in LEVEL_PATHS and plate:
            version = job["wildcards"].get("seg")
            before = held.get((plate, level, version))
            made[(level, version)] = "made again" if before is not None else "new"
    versions = [
        {"level": level, "version": version, "what": what}
        for (level, version), what in sorted(made.items(), key=str)
    ]
    table = solutions(new_config)
    outs = {o.path: o for o in tracked_outputs(new_config, workspace)}
    restore: dict[str, dict[str, Any]] = {}
    # Sizes as the storage plan has them: on disk, in dvc.lock, or the tombstones'.
    sized = storage_plan(new_config, workspace)
    sizes = {(r.plate, r.level, r.version): int(r.bytes) for r in sized.itertuples()}
    for job in jobs:
        for path in job["inputs"]:
            out = outs.get(holding_output(path, outs))
            if out is None or out.path in restore:
                continue
            row = held.get((out.plate, out.level, out.version))
            if row is None or row.state in {"present", "deleted"}:
                continue
            place = table[remote_solution(new_config, out.remote)]
            size = sizes.get((out.plate, out.level, out.version), 0)
            low, high = _pair(place.get("per_gb_retrieval"))
            restore[out.path] = {
                "path": out.path,
                "state": row.state,
                "bytes": size,
                "how": f"cellstrata pull {out.path} (remote {out.remote})",
                "retrieval_usd": round(size / GB * low, 6),
                "retrieval_usd_high": round(size / GB * high, 6),
            }
    for r in state.itertuples():
        key = (r.level, r.version)
        if r.state == "deleted" and made.get(key) == "made again":
            restore[level_path(r.level, r.plate, r.version)] = {
                "path": level_path(r.level, r.plate, r.version),
                "state": "deleted",
                "bytes": sizes.get((r.plate, r.level, r.version), 0),
                "how": f"remade by the plan's {r.level} jobs (retention delete)",
                "retrieval_usd": 0.0,
                "retrieval_usd_high": 0.0,
            }
    storage = []
    # A new version is sized as what the workspace holds of the same plate and level.
    current = {
        (r.plate, r.level): int(r.bytes)
        for r in sized.itertuples()
        if r.bytes and not r.size_source.startswith("estimate")
    }
    for (level, version), what in sorted(made.items(), key=str):
        if what != "new":
            continue
        for plate in sorted(
            {j["wildcards"].get("plate") for j in jobs if j["wildcards"].get("seg") == version}
            - {None}
        ):
            action = retention_kind(new_config["retention"], level, plate)
            size = current.get((plate, level), 0)
            priced = _cost(new_config, plate, level, action, size)
            storage.append(
                {
                    "plate": plate,
                    "level": level,
                    "version": version,
                    "retention": action,
                    "bytes": size,
                    "one_time_usd": priced["one_time_usd"],
                    "one_time_usd_high": priced["one_time_usd_high"],
                    "monthly_usd": priced["monthly_usd"],
                    "monthly_usd_high": priced["monthly_usd_high"],
                    "solution": priced["solution"],
                }
            )
    job_rows = list(rows.values())
    totals = {
        "jobs": sum(r["jobs"] for r in job_rows),
        "core_hours": round(sum(r["core_hours"] for r in job_rows), 4),
        "gpu_hours": round(sum(r["gpu_hours"] for r in job_rows), 4),
        "restore_bytes": sum(r["bytes"] for r in restore.values() if r["state"] != "deleted"),
        "retrieval_usd": round(sum(r["retrieval_usd"] for r in restore.values()), 6),
        "retrieval_usd_high": round(sum(r["retrieval_usd_high"] for r in restore.values()), 6),
        "added_bytes": sum(r["bytes"] for r in storage),
        "added_one_time_usd": round(sum(r["one_time_usd"] for r in storage), 6),
        "added_one_time_usd_high": round(sum(r["one_time_usd_high"] for r in storage), 6),
        "added_monthly_usd": round(sum(r["monthly_usd"] for r in storage), 6),
        "added_monthly_usd_high": round(sum(r["monthly_usd_high"] for r in storage), 6),
    }
    for row in job_rows:
        row["core_hours"] = round(row["core_hours"], 4)
        row["gpu_hours"] = round(row["gpu_hours"], 4)
    return {
        "jobs": job_rows,
        "versions": versions,
        "restore": list(restore.values()),
        "storage": storage,
        "totals": totals,
    }


def _pair(value: Any) -> tuple[float, float]:
    if value is None:
        return 0.0, 0.0
    return (float(value[0]), float(value[1])) if isinstance(value, list) else (value, value)


def format_plan(plan: Mapping[str, Any]) -> str:
    """The plan as terminal tables."""
    from cellstrata.stewardship.solutions import human_size
    from cellstrata.stewardship.storage import usd_range

    totals = plan["totals"]
    lines = ["jobs per rule and version (Snakemake's dry run):"]
    lines.append(pd.DataFrame(plan["jobs"]).to_string(index=False) if plan["jobs"] else "  none")
    lines += ["", "levels and versions made:"]
    lines += [f"  {v['level']} {v['version'] or ''}: {v['what']}" for v in plan["versions"]]
    lines += ["", "to restore or remake first:"]
    lines += [
        f"  {r['path']} ({r['state']}, {human_size(r['bytes'])}): {r['how']}; retrieval "
        + usd_range(r["retrieval_usd"], r["retrieval_usd_high"])
        for r in plan["restore"]
    ] or ["  nothing"]
    lines += ["", "storage the new versions add:"]
    lines.append(
        pd.DataFrame(plan["storage"]).to_string(index=False) if plan["storage"] else "  none"
    )
    lines += [
        "",
        f"total: {totals['jobs']} jobs, {totals['core_hours']:.3f} core-hours, "
        f"{totals['gpu_hours']:.3f} GPU-hours; restore {human_size(totals['restore_bytes'])} "
        f"(retrieval {usd_range(totals['retrieval_usd'], totals['retrieval_usd_high'])}); "
        f"adds {human_size(totals['added_bytes'])}: "
        f"{usd_range(totals['added_one_time_usd'], totals['added_one_time_usd_high'])} once, "
        f"{usd_range(totals['added_monthly_usd'], totals['added_monthly_usd_high'])} per month",
    ]
    return "\n".join(lines)
