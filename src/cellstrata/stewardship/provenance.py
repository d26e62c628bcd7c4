"""Provenance: a record per job (inputs and outputs with hashes, parameters, code, software,
host, times), the run-wide table, and the lineage of any output back to the raw images.

A record outlives its outputs: for a level with retention ``delete`` it is the tombstone that
says what existed and how to remake it.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from cellstrata.config import (
    plate_definition,
)
from cellstrata.io import atomic_path
from cellstrata.levels import (
    RULE_LEVELS,
    retention_of,
)
from cellstrata.stewardship.origin import origin_record
from cellstrata.workflow.failpoint import failpoint
from cellstrata.workflow.logs import logged

log = logging.getLogger(__name__)

#: Packages whose versions every record carries.
SOFTWARE = (
    "cellstrata",
    "numpy",
    "scipy",
    "scikit-image",
    "pandas",
    "pyarrow",
    "tifffile",
    "imagecodecs",
    "pycytominer",
    "cytotable",
    "duckdb",
    "snakemake",
    # Optional learned methods: None in a record means the package was not installed.
    "torch",
    "cellpose",
    "onnxruntime",
)
PROVENANCE_DIR = "provenance"


def md5_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """MD5 of a file's bytes (the hash DVC uses, so records and DVC objects agree)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_files(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Path, size and MD5 of each file; directories are expanded (hidden files skipped)."""
    described = []
    for path in paths:
        path = Path(path)
        files = (
            sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if path.is_dir()
            else [path]
        )
        for file in files:
            described.append(
                {"path": file.as_posix(), "size": file.stat().st_size, "md5": md5_file(file)}
            )
    return described


def git_state(path: str | os.PathLike) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout holding ``path`` (None outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def software_versions() -> dict[str, str | None]:
    """Versions of Python and of the packages in :data:`SOFTWARE` (None when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def job_record(
    *,
    rule: str,
    wildcards: Mapping[str, str],
    inputs: Iterable[str],
    outputs: Iterable[str],
    params: Mapping[str, Any],
    retention: str | None,
    start: str,
    end: str,
    experiment: str | None = None,
    plate: Mapping[str, str] | None = None,
    origin: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to say what made a job's outputs (see the module docstring).

    ``experiment`` and ``plate`` (:func:`cellstrata.config.plate_definition`) say which
    experiment and which plate definition made them (experiment-level jobs have no plate);
    ``origin`` whose data they are and who may see them
    (:func:`cellstrata.stewardship.origin.origin_record`).
    """
    return {
        "rule": rule,
        "level": RULE_LEVELS.get(rule),
        "retention": retention,
        "experiment": experiment,
        "plate": dict(plate) if plate else None,
        "origin": json.loads(json.dumps(origin)) if origin else None,
        "wildcards": dict(wildcards),
        "inputs": describe_files(inputs),
        "outputs": describe_files(outputs),
        "params": json.loads(json.dumps(dict(params), default=str)),
        "software": software_versions(),
        "code": git_state(Path(__file__).parent),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "platform": platform.platform(),
        "argv": sys.argv[:1],
        "start": start,
        "end": end,
    }


@contextmanager
def recorded_job(smk: Any, inputs: Sequence[str] | None = None) -> Iterator[logging.Logger]:
    """Log a Snakemake script job and, when it succeeds, write its provenance record.

    ``smk`` is the ``snakemake`` object a script receives; the record goes to its
    ``output.provenance``. Nothing is written when the job fails. ``inputs``: the files the job
    read, where they are not its Snakemake inputs (rule ingest: every raw image, of which the
    DAG sees only the image root); a list the job may fill while it runs.

    Ends at the reliability suite's failpoint (:mod:`cellstrata.workflow.failpoint`).
    """
    start = _now()
    with logged(smk.log[0]) as logger:
        yield logger
        record_path = smk.output.provenance
        level = RULE_LEVELS.get(smk.rule)
        plate = smk.wildcards.get("plate")
        record = job_record(
            rule=smk.rule,
            wildcards=dict(smk.wildcards.items()),
            inputs=list(smk.input) if inputs is None else inputs,
            outputs=[p for p in smk.output if p != record_path],
            params=dict(smk.params.items()),
            retention=retention_of(smk.config["retention"], level, plate) if level else None,
            start=start,
            end=_now(),
            experiment=smk.config["experiment"],
            plate=plate_definition(smk.config, plate) if plate else None,
            # From the config, not a rule parameter: who may see a plate changes no output.
            origin=origin_record(smk.config, plate),
        )
        write_record(record_path, record)
        logger.info("provenance record %s", record_path)
        failpoint(smk.rule, smk.wildcards, logger)


def write_record(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Write a record as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))


def read_records(results: str | os.PathLike = "results") -> list[dict[str, Any]]:
    """All job records under ``results/provenance``."""
    root = Path(results, PROVENANCE_DIR)
    return [json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))]


def records_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per output file: what made it, when, from which code, with which hash."""
    rows = []
    for record in records:
        for output in record["outputs"]:
            rows.append(
                {
                    "path": output["path"],
                    "size": output["size"],
                    "md5": output["md5"],
                    "level": record["level"],
                    "retention": record["retention"],
                    "rule": record["rule"],
                    "wildcards": json.dumps(record["wildcards"], sort_keys=True),
                    "n_inputs": len(record["inputs"]),
                    "params": json.dumps(record["params"], sort_keys=True),
                    "git_commit": record["code"]["commit"],
                    "git_dirty": record["code"]["dirty"],
                    "cellstrata": record["software"].get("cellstrata"),
                    "host": record["host"],
                    "start": record["start"],
                    "end": record["end"],
                }
            )
    return pd.DataFrame(rows)


def write_table(results: str | os.PathLike, output: str | os.PathLike) -> pd.DataFrame:
    """Collect every record under ``results`` into one Parquet table."""
    from cellstrata.io import write_parquet

    table = records_table(read_records(results))
    write_parquet(output, table)
    return table


def _producers(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {output["path"]: record for record in records for output in record["outputs"]}


def lineage(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The chain of jobs behind ``path``, newest first, down to inputs no job made (raw data).

    ``path`` may be a file or a directory output (every file recorded under it counts).

    Returns
    -------
    list of dict
        ``{"depth", "rule", "wildcards", "outputs", "start", "code", "raw_inputs"}`` per job,
        each job listed once.
    """
    records = list(records)
    producers = _producers(records)
    target = Path(path).as_posix().rstrip("/")
    start = [
        record for out, record in producers.items() if out == target or out.startswith(target + "/")
    ]
    if not start:
        raise FileNotFoundError(f"no provenance record produced {target}")
    chain, seen, frontier = [], set(), [(0, r) for r in start]
    while frontier:
        depth, record = frontier.pop(0)
        key = (record["rule"], json.dumps(record["wildcards"], sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        raw = [i for i in record["inputs"] if i["path"] not in producers]
        chain.append(
            {
                "depth": depth,
                "rule": record["rule"],
                "wildcards": record["wildcards"],
                "outputs": len(record["outputs"]),
                "start": record["start"],
                "code": record["code"],
                "raw_inputs": raw,
            }
        )
        for item in record["inputs"]:
            if item["path"] in producers:
                frontier.append((depth + 1, producers[item["path"]]))
    return chain


def format_lineage(chain: list[dict[str, Any]]) -> str:
    """Human-readable lineage, one job per line, raw inputs summarised."""
    lines = []
    for job in chain:
        where = ", ".join(f"{k}={v}" for k, v in job["wildcards"].items())
        commit = (job["code"]["commit"] or "unknown")[:10]
        dirty = " (dirty)" if job["code"]["dirty"] else ""
        lines.append(
            f"{'  ' * job['depth']}{job['rule']} [{where}] at {job['start']}, "
            f"code {commit}{dirty}, {job['outputs']} output file(s)"
        )
        if job["raw_inputs"]:
            sample = ", ".join(i["path"] for i in job["raw_inputs"][:3])
            more = len(job["raw_inputs"]) - 3
            lines.append(
                f"{'  ' * (job['depth'] + 1)}raw inputs: {sample}"
                + (f" and {more} more" if more > 0 else "")
            )
    return "\n".join(lines)


def recorded_batches(results: str | os.PathLike, plate: str) -> list[str]:
    """Batches of a plate that have a features record (the DAG's fallback without images)."""
    root = Path(results, PROVENANCE_DIR, plate, "features")
    return sorted({p.stem for p in root.glob("*/*.json")})
