"""What a publication holds: the files of the chosen plates and levels, the records of the
jobs behind them, and the refusals of what may not or cannot go (:func:`collect`); the files
as references to their DVC objects (:func:`add_references`); the split into records that fit
a storage solution's limits (:func:`target_parts`).

Every plate and level must be public on the publication day
(:mod:`cellstrata.stewardship.origin`); levels deleted by retention are refused with the
command that remakes them, never skipped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from cellstrata.levels import (
    EXPERIMENT_PATH,
    LEVEL_PATHS,
    VERSIONED_LEVELS,
    level_path,
    retention_of,
)
from cellstrata.segment.versions import experiment_versions
from cellstrata.stewardship.origin import data_access, embargo_note, plate_origin
from cellstrata.stewardship.provenance import read_records
from cellstrata.stewardship.solutions import GB, human_size, limit_problems, solutions

REMAKE = (
    "snakemake --cores all --configfile {config} --notemp --until {rules}  "
    "# remakes the {level} of every plate and keeps it until the next run deletes it"
)


class PublishError(ValueError):
    """A package that must not, or cannot, be written; nothing was written."""


@dataclass
class Entry:
    """One data file of the package."""

    path: str
    plate: str | None
    level: str
    version: str | None
    size: int
    md5: str | None = None
    sha256: str | None = None
    #: With ``--by-reference``: the file's DVC object on a public remote, instead of its bytes.
    url: str | None = None


@dataclass
class Package:
    """What :func:`collect` found to publish."""

    plates: list[str]
    levels: list[str]
    version: str | None
    day: date
    entries: list[Entry]
    records: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes the package holds (files given by reference are not in it)."""
        return sum(e.size for e in self.entries if e.url is None)


def files_under(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    # Hidden files are bookkeeping (Snakemake's .snakemake_timestamp in directory outputs).
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def _version(config: Mapping[str, Any], version: str | None) -> str:
    versions = experiment_versions(config)
    if version is None:
        return versions[0]
    return version


def _jobs_of(level: str) -> list[str]:
    from cellstrata.levels import LEVEL_DECLARATIONS

    return [job.rule for decl in LEVEL_DECLARATIONS if decl.name == level for job in decl.jobs]


def collect(
    config: Mapping[str, Any],
    workspace: str | os.PathLike = ".",
    *,
    levels: Sequence[str],
    plates: Sequence[str] | None = None,
    version: str | None = None,
    day: date | None = None,
    config_name: str = "config/config.yaml",
) -> Package:
    """The files, records and refusals of a package of ``levels`` of ``plates`` (default:
    every plate) in segmentation ``version`` (default: the config's main one).

    Raises
    ------
    PublishError
        Naming each plate and level that is not public on ``day`` (default today), has no
        licence, is not in the workspace (with the command that remakes a level deleted by
        retention), or an unknown plate or level.
    """
    workspace = Path(workspace)
    day = day or date.today()
    names = [p["name"] for p in config["plates"]]
    plates = list(plates or names)
    unknown = [p for p in plates if p not in names]
    bad_levels = [lv for lv in levels if lv not in LEVEL_PATHS]
    if unknown or bad_levels:
        raise PublishError(
            "; ".join(
                [f"unknown plate {p!r} (plates: {', '.join(names)})" for p in unknown]
                + [f"unknown level {lv!r} (levels: {', '.join(LEVEL_PATHS)})" for lv in bad_levels]
            )
        )
    version = _version(config, version)
    problems: list[str] = []
    entries: list[Entry] = []
    for plate in plates:
        origin = plate_origin(config, plate)
        for level in levels:
            access = data_access(config, [plate], level, day)
            if access != "public":
                embargo = embargo_note(origin, day)
                problems.append(
                    f"plate {plate}, level {level}: access {access} on {day}"
                    + (f" (embargo {embargo})" if embargo else "")
                    + "; only public data is published"
                )
                continue
            if not origin.get("license"):
                problems.append(
                    f"plate {plate}, level {level}: no licence (plates[{plate}].origin.license "
                    "or origin.license, an SPDX id such as CC-BY-4.0)"
                )
                continue
            path = level_path(level, plate, version if level in VERSIONED_LEVELS else None)
            files = files_under(workspace / path) if (workspace / path).exists() else []
            if not files:
                problems.append(missing_reason(config, level, plate, path, config_name))
                continue
            entries += [
                Entry(f.relative_to(workspace).as_posix(), plate, level, version, f.stat().st_size)
                for f in files
            ]
    if problems:
        raise PublishError(
            f"publish refused, nothing written ({len(problems)} problem(s)):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    notes = []
    if "profiles" in levels:
        experiment = workspace / EXPERIMENT_PATH.format(version=version)
        every = data_access(config, names, "profiles", day)
        if set(plates) == set(names) and every == "public" and experiment.is_dir():
            entries += [
                Entry(
                    f.relative_to(workspace).as_posix(), None, "profiles", version, f.stat().st_size
                )
                for f in files_under(experiment)
            ]
        elif experiment.is_dir():
            notes.append(
                "The experiment tables (every plate stacked, consensus, quality) are not included: "
                "they combine plates that are not published here."
            )
    records = _lineage_records(workspace, {e.path for e in entries}, plates)
    for entry in entries:
        entry.sha256 = sha256_file(workspace / entry.path)
    return Package(plates, list(levels), version, day, entries, records, notes)


def missing_reason(config: Mapping[str, Any], level: str, plate: str, path: str, name: str) -> str:
    """Why a level is not in the workspace, and what brings it back."""
    retention = retention_of(config["retention"], level, plate)
    if retention == "delete":
        command = REMAKE.format(config=name, rules=" ".join(_jobs_of(level)), level=level)
        return (
            f"plate {plate}, level {level}: not in the workspace ({path}): deleted after use "
            f"(retention delete); remake it first: {command}"
        )
    if retention == "archive":
        return (
            f"plate {plate}, level {level}: not in the workspace ({path}): archived; bring it "
            f"back first: cellstrata pull {path}"
        )
    return f"plate {plate}, level {level}: not in the workspace ({path}): run the workflow first"


def _lineage_records(
    workspace: Path, published: set[str], plates: Sequence[str]
) -> list[dict[str, Any]]:
    """The records of every job that made a published file or anything upstream of one."""
    chosen = lineage_for(read_records(workspace / "results"), published)
    for record in chosen:
        plate = record["wildcards"].get("plate")
        if plate is not None and plate not in plates:
            raise PublishError(
                f"a published file comes from a job of a plate not published ({record['rule']})"
            )
    return sorted(chosen, key=lambda r: (r["start"], r["rule"]))


def lineage_for(records: Sequence[Mapping[str, Any]], paths: set[str]) -> list[dict[str, Any]]:
    """The records of ``records`` upstream of ``paths``."""
    producers = {o["path"]: r for r in records for o in r["outputs"]}
    chosen: dict[int, Mapping[str, Any]] = {}
    frontier = [producers[p] for p in sorted(paths) if p in producers]
    while frontier:
        record = frontier.pop()
        if id(record) not in chosen:
            chosen[id(record)] = record
            frontier += [producers[i["path"]] for i in record["inputs"] if i["path"] in producers]
    return [dict(r) for r in records if id(r) in chosen]


def add_references(config: Mapping[str, Any], workspace: Path, package: Package) -> None:
    """Point every entry at its DVC object on a public remote that verifiably holds it
    (``<remote url>/files/md5/<ab>/<cdef...>``), for levels too large to deposit.

    Raises
    ------
    PublishError
        Naming each file no public remote holds (with the push that sends it), or a public
        remote that is a directory (a reference nobody else can follow).
    """
    from cellstrata.stewardship.dvc import remote_has
    from cellstrata.stewardship.provenance import md5_file
    from cellstrata.stewardship.solutions import remote_access

    remotes = config["storage"]["remotes"]
    public = [r for r in remotes if remote_access(config, r) == "public"]
    reachable = [r for r in public if "://" in str(remotes[r]["url"])]
    problems = [
        f"remote {r} is a directory: a reference to it cannot be followed by anyone else"
        for r in public
        if r not in reachable
    ]
    if not public:
        problems.append("no public remote in storage.remotes to refer to")
    for entry in package.entries if reachable else []:
        entry.md5 = md5_file(workspace / entry.path)
        holder = next((r for r in reachable if remote_has(workspace, r, entry.md5)), None)
        if holder is None:
            problems.append(
                f"{entry.path}: on no public remote ({', '.join(reachable)}); send it first: "
                f"cellstrata push --to {reachable[0]} --plates {entry.plate or '<every plate>'} "
                f"--levels {entry.level} --today {package.day}"
            )
            continue
        base = str(remotes[holder]["url"]).rstrip("/")
        entry.url = f"{base}/files/md5/{entry.md5[:2]}/{entry.md5[2:]}"
    if problems:
        raise PublishError(
            f"publish --by-reference refused, nothing written ({len(problems)} problem(s)):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def target_parts(config: Mapping[str, Any], package: Package, target: str) -> list[list[Entry]]:
    """The package split into records that fit solution ``target`` of ``storage.solutions``
    (one when it fits): a per-dataset limit splits whole files into several records; a
    per-file or total limit, a minimum dataset size or a solution that is not public refuses.

    Raises
    ------
    PublishError
        Naming the solution, its limit, and the files that do not fit.
    """
    table = solutions(config)
    if target not in table:
        raise PublishError(
            f"--target {target!r} is not a storage solution ({', '.join(sorted(table))})"
        )
    solution = table[target]
    if solution.get("access") != "public":
        raise PublishError(
            f"--target {target}: a {solution.get('access')} solution; publish goes to public ones"
        )
    problems = []
    per_file = solution.get("limit_gb_file")
    if per_file is not None:
        over = [e for e in package.entries if e.url is None and e.size > per_file * GB]
        problems += [
            f"{e.path} ({human_size(e.size)}): over {target}'s {human_size(per_file * GB)} per file"
            for e in over
        ]
    # A total limit or a minimum dataset size refuses; a per-dataset limit splits below.
    rest = {k: v for k, v in solution.items() if k not in ("limit_gb_file", "limit_gb_dataset")}
    problems += limit_problems(target, rest, size=package.size, largest_file=0, total=package.size)
    if problems:
        raise PublishError(
            f"publish --target {target} refused, nothing written:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    limit = solution.get("limit_gb_dataset")
    if limit is None or package.size <= limit * GB:
        return [package.entries]
    parts: list[list[Entry]] = [[]]
    used = 0
    for entry in package.entries:
        size = 0 if entry.url else entry.size
        if size > limit * GB:
            raise PublishError(
                f"publish --target {target} refused, nothing written: {entry.path} "
                f"({human_size(entry.size)}) alone is over {target}'s {human_size(limit * GB)} "
                "per dataset"
            )
        if used + size > limit * GB and parts[-1]:
            parts.append([])
            used = 0
        parts[-1].append(entry)
        used += size
    return parts
