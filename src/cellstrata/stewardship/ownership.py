"""Which experiment and which image data a workspace holds: refusing a config of another
experiment, or other images under a plate's name, and ``cellstrata adopt`` to take them over."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cellstrata.config import (
    plate_definition,
)
from cellstrata.levels import (
    EXPERIMENT_PROVENANCE_PATH,
    RETIRED_PATH,
)
from cellstrata.stewardship.provenance import PROVENANCE_DIR, write_record
from cellstrata.stewardship.tracked import StewardshipError


def _owner_records(workspace: Path) -> list[tuple[Path, dict[str, Any]]]:
    """One record per plate of the workspace (its ingest record, else its first) and one per
    experiment-level version: who made what the workspace holds."""
    root = workspace / "results" / PROVENANCE_DIR
    found = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        if folder == workspace / RETIRED_PATH:
            continue
        groups = (
            sorted(p for p in folder.glob("*") if p.is_dir())
            if folder == workspace / EXPERIMENT_PROVENANCE_PATH
            else [folder]
        )
        for group in groups:
            first = group / "ingest.json"
            if not first.exists():
                first = next(iter(sorted(group.rglob("*.json"))), None)
            if first is not None:
                found.append((first, json.loads(first.read_text())))
    return found


def _source(definition: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, normalised path) of a plate definition's data: its images or CellProfiler output."""
    kind = "images" if definition.get("images") is not None else "cellprofiler"
    return kind, os.path.normpath(str(definition.get(kind)))


def _place(record: Mapping[str, Any]) -> str:
    plate = record["wildcards"].get("plate")
    return f"plate {plate}" if plate else f"the experiment level of {record['wildcards']['seg']}"


def check_ownership(config: Mapping[str, Any], workspace: str | os.PathLike = ".") -> None:
    """Refuse a config that would overwrite data another experiment, or another plate
    definition, made in this workspace.

    Every job record names its experiment and plate definition (image root or CellProfiler
    output, platemap). A workspace holds one experiment: another experiment's plates reuse its
    plate names, or share its experiment-level tables, summary and report. A plate whose data
    came from another image root is refused too. Records written before they named their
    experiment are trusted.

    Raises
    ------
    StewardshipError
        Naming both sides, with the two ways out: a workspace of its own
        (``snakemake --directory``) or ``cellstrata adopt``.
    """
    workspace = Path(workspace)
    experiment = config["experiment"]
    plates = {p["name"] for p in config["plates"]}
    others: dict[str, list[str]] = {}
    moved = []
    for _, record in _owner_records(workspace):
        owner = record.get("experiment")
        if owner is None:
            continue
        if owner != experiment:
            others.setdefault(owner, []).append(_place(record))
            continue
        recorded = record.get("plate")
        if recorded and recorded["name"] in plates:
            current = plate_definition(config, recorded["name"])
            if _source(recorded) != _source(current):
                kind, before = _source(recorded)
                moved.append(
                    f"  - plate {recorded['name']}: made from {kind} {before}, the config "
                    f"gives {_source(current)[1]}"
                )
    adopt_hint = "cellstrata adopt --config <this config>"
    if others:
        held = "\n".join(
            f"  - experiment {owner!r}: {', '.join(places)}" for owner, places in others.items()
        )
        raise StewardshipError(
            f"this workspace holds data of another experiment:\n{held}\n"
            f"The config is experiment {experiment!r}: its plates, experiment-level tables, "
            "summary and report would overwrite them. Run it in a workspace of its own: "
            "snakemake --directory <new workspace> --configfile <this config> (the results go "
            "there). If it is the same experiment under a new name, take the data over "
            f"explicitly: {adopt_hint}"
        )
    if moved:
        raise StewardshipError(
            "plates of this workspace were made from other data than the config gives:\n"
            + "\n".join(moved)
            + f"\nIf the raw data moved (a new mount), take the outputs over with `{adopt_hint}`; "
            "if these are other data, give the plate another name or run it in a workspace of "
            "its own (snakemake --directory <new workspace>)."
        )


def adopt(
    config: Mapping[str, Any],
    workspace: str | os.PathLike = ".",
    *,
    plates: Sequence[str] | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Take the workspace's data over for the config: the records of its plates (and of the
    experiment level) are rewritten with the config's experiment and plate definitions, each
    keeping what it said before under ``adopted``.

    For the legitimate cases :func:`check_ownership` refuses: raw images moved to a new mount,
    an experiment renamed. Whatever depends on a changed image root re-runs as Snakemake decides
    (the image paths are parameters of rule ingest).

    Returns
    -------
    list of str
        One line per plate or experiment-level version taken over.
    """
    workspace = Path(workspace)
    chosen = set(plates) if plates else {p["name"] for p in config["plates"]}
    unknown = chosen - {p["name"] for p in config["plates"]}
    if unknown:
        raise StewardshipError(f"adopt: {sorted(unknown)} are not plates of the config")
    experiment = config["experiment"]
    changes: dict[str, list[Path]] = {}
    root = workspace / "results" / PROVENANCE_DIR
    for path in sorted(root.rglob("*.json")):
        record = json.loads(path.read_text())
        plate = record["wildcards"].get("plate")
        if plate is not None and plate not in chosen:
            continue
        definition = plate_definition(config, plate) if plate else None
        before = {"experiment": record.get("experiment"), "plate": record.get("plate")}
        if before == {"experiment": experiment, "plate": definition}:
            continue
        place = _place(record)
        if before["experiment"] != experiment:
            place += f": experiment {before['experiment']!r} -> {experiment!r}"
        if definition and before["plate"] and _source(before["plate"]) != _source(definition):
            place += f": {_source(before['plate'])[1]} -> {_source(definition)[1]}"
        changes.setdefault(place, []).append(path)
        if dry_run:
            continue
        record.setdefault("adopted", []).append(
            {
                "from": before,
                "at": datetime.now().astimezone().isoformat(timespec="seconds"),
                "user": getpass.getuser(),
            }
        )
        record["experiment"], record["plate"] = experiment, definition
        write_record(path, record)
    return [f"{place} ({len(paths)} record(s))" for place, paths in changes.items()]
