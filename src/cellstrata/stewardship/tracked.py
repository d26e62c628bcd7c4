"""What a workspace tracks with DVC: one output per plate and kept or archived level (and
version), those of the versions the config no longer makes but records still name included."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cellstrata.config import (
    CELLPROFILER_VERSION,
)
from cellstrata.levels import (
    EXPERIMENT_PATH,
    EXPERIMENT_PROVENANCE_PATH,
    LEVEL_PATHS,
    LIFECYCLE_PATH,
    PROVENANCE_PATH,
    RETIRED_PATH,
    VERSIONED_LEVELS,
    level_path,
    plate_level_versions,
    retention_kind,
)
from cellstrata.segment.versions import experiment_versions
from cellstrata.stewardship.origin import data_access
from cellstrata.stewardship.provenance import read_records
from cellstrata.stewardship.routing import route


class StewardshipError(RuntimeError):
    """A retention, DVC or remote action could not be done safely; nothing was deleted."""


@dataclass(frozen=True)
class TrackedOutput:
    """One DVC output: a plate's level (or its provenance, raw images, platemap), or a
    version's experiment-level outputs (``plate`` None); the plates its data come from, their
    strictest access over their whole schedules, and the remote the routing sends it to."""

    stage: str
    path: str
    level: str
    plate: str | None
    retention: str
    version: str | None
    plates: tuple[str, ...]
    access: str
    remote: str


def _inside(path: str | os.PathLike, workspace: Path) -> str | None:
    """``path`` relative to the workspace, or None when it lies outside."""
    full = (workspace / path).resolve()
    try:
        return full.relative_to(workspace.resolve()).as_posix()
    except ValueError:
        return None


def _stage_name(*parts: str) -> str:
    return "_".join(part.replace(".", "-") for part in parts)


#: The experiment level's key in :func:`extra_versions` (it has no plate).
EXPERIMENT_LEVEL = (None, "experiment")


def retired_versions(workspace: str | os.PathLike = ".") -> set[str]:
    """Versions retired with :func:`retire` (their records in :data:`RETIRED_PATH`)."""
    return {path.stem for path in Path(workspace, RETIRED_PATH).glob("*.yaml")}


def lifecycle_moves(workspace: str | os.PathLike = ".") -> dict[str, dict[str, Any]]:
    """The records of outputs ``cellstrata lifecycle`` moved (:data:`LIFECYCLE_PATH`), by
    output path: the step of its schedule it is in, its retention and remote now."""
    root = Path(workspace, LIFECYCLE_PATH)
    records = (yaml.safe_load(p.read_text()) for p in sorted(root.glob("*.yaml")))
    return {record["path"]: record for record in records}


def _version_paths() -> list[tuple[str, re.Pattern]]:
    """(level, pattern with groups version and plate) of every versioned output path."""
    patterns = [
        (level, LEVEL_PATHS[level].format(version="(?P<version>[^/]+)", plate="(?P<plate>[^/]+)"))
        for level in VERSIONED_LEVELS
    ]
    patterns.append(("experiment", EXPERIMENT_PATH.format(version="(?P<version>[^/]+)")))
    return [(level, re.compile(pattern + "$")) for level, pattern in patterns]


def extra_versions(
    config: Mapping[str, Any],
    workspace: str | os.PathLike = ".",
    records: Sequence[Mapping[str, Any]] | None = None,
) -> dict[tuple[str | None, str], list[str]]:
    """Versions this workspace made or tracked that the config no longer makes.

    A parameter change makes a new version beside the old one, and the old one's data stay
    where they are: they must stay pushed, archived, counted and pullable until they are
    retired on purpose (:func:`retire`). Its evidence is the provenance records (what jobs
    made here, deleted levels included) and ``dvc.lock`` (what was tracked, archived data
    included), for the config's image plates.

    Returns
    -------
    dict
        ``{(plate, level): [version, ...]}``; the experiment level's key is
        :data:`EXPERIMENT_LEVEL`.
    """
    workspace = Path(workspace)
    current = set(experiment_versions(config))
    plates = {p["name"] for p in config["plates"] if p.get("images") is not None}
    skip = current | retired_versions(workspace) | {CELLPROFILER_VERSION}
    found: dict[tuple[str | None, str], set[str]] = {}

    def add(plate: str | None, level: str, version: str | None) -> None:
        if version and version not in skip and (plate is None or plate in plates):
            found.setdefault((plate, level), set()).add(version)

    if records is None:
        records = read_records(workspace / "results")
    for record in records:
        wildcards = record["wildcards"]
        if record["level"] not in VERSIONED_LEVELS or "seg" not in wildcards:
            continue
        if "plate" in wildcards:
            add(wildcards["plate"], record["level"], wildcards["seg"])
        else:  # rules experiment and quality
            add(*EXPERIMENT_LEVEL, wildcards["seg"])
    patterns = _version_paths()
    for path in locked_outputs(workspace):
        for level, pattern in patterns:
            match = pattern.match(path)
            if match:
                add(match.groupdict().get("plate"), level, match["version"])
    return {key: sorted(versions) for key, versions in sorted(found.items(), key=str)}


def tracked_outputs(
    config: Mapping[str, Any],
    workspace: str | os.PathLike = ".",
    *,
    extra: Mapping[tuple[str | None, str], list[str]] | None = None,
) -> list[TrackedOutput]:
    """Every DVC output of the workspace, in a stable order: what the config asks for, and
    the versions it no longer makes that the workspace still holds (``extra``, by default
    :func:`extra_versions`; a caller that has them already passes them).

    Raw images and platemaps are tracked only when they lie inside the workspace (DVC cannot
    track files elsewhere); levels with retention ``delete`` are never tracked.
    """
    workspace = Path(workspace)
    retention = config["retention"]
    if extra is None:
        extra = extra_versions(config, workspace)
    moves = lifecycle_moves(workspace)
    every = tuple(p["name"] for p in config["plates"])
    outputs: list[TrackedOutput] = []

    def track(
        stage: str,
        path: str,
        level: str,
        plate: str | None,
        action: str,
        version: str | None = None,
        plates: tuple[str, ...] = every,
    ) -> None:
        plates = (plate,) if plate is not None else plates
        access = data_access(config, plates, level)
        remote = route(config, level=level, plate=plate, retention=action, access=access)
        if path in moves:  # a later step of its schedule: where the lifecycle moved it
            action, remote = moves[path]["retention"], moves[path]["remote"]
        outputs.append(
            TrackedOutput(stage, path, level, plate, action, version, plates, access, remote)
        )

    platemaps: dict[str, list[str]] = {}
    for plate in config["plates"]:
        name = plate["name"]
        # A CellProfiler plate's raw data is the CellProfiler output it was given.
        raw = _inside(plate.get("images") or plate["cellprofiler"], workspace)
        if raw is not None:
            track(
                _stage_name("raw", name), raw, "raw", name, retention_kind(retention, "raw", name)
            )
        platemap = _inside(plate["platemap"], workspace)
        if platemap is not None:
            platemaps.setdefault(platemap, []).append(name)
        for level in LEVEL_PATHS:
            action = retention_kind(retention, level, name)
            if action == "delete":
                continue
            versions = plate_level_versions(config, name, level) + extra.get((name, level), [])
            for version in versions:
                stage = _stage_name(level, *([version] if version else []), name)
                track(stage, level_path(level, name, version), level, name, action, version)
        track(
            _stage_name("provenance", name),
            PROVENANCE_PATH.format(plate=name),
            "provenance",
            name,
            "keep",
        )
    for version in experiment_versions(config) + extra.get(EXPERIMENT_LEVEL, []):
        action = retention_kind(retention, "profiles")
        path = EXPERIMENT_PATH.format(version=version)
        track(_stage_name("experiment", version), path, "profiles", None, action, version)
    track("provenance_experiment", EXPERIMENT_PROVENANCE_PATH, "provenance", None, "keep")
    if Path(workspace, RETIRED_PATH).is_dir():
        track("provenance_retired", RETIRED_PATH, "provenance", None, "keep")
    if Path(workspace, LIFECYCLE_PATH).is_dir():
        track("provenance_lifecycle", LIFECYCLE_PATH, "provenance", None, "keep")
    for index, (path, users) in enumerate(platemaps.items()):
        stage = _stage_name("platemap", str(index + 1))
        track(stage, path, "platemap", None, "keep", plates=tuple(users))
    return outputs


def locked_outputs(workspace: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Outputs recorded in ``dvc.lock``: path -> ``{"md5", "size", "nfiles"}``."""
    lock = Path(workspace, "dvc.lock")
    if not lock.exists():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {
        out["path"]: {
            "md5": out.get("md5"),
            "size": int(out.get("size", 0)),
            "nfiles": int(out.get("nfiles", 1)),
        }
        for stage in stages.values()
        for out in stage.get("outs", [])
    }
