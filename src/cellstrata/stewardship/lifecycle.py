"""Lifecycle: a level's retention over time. A schedule (``retention.levels.masks:
[{keep: 90d}, {archive: cold_archive}]``) says how long each step holds, counted from when the
level was made (the end of the newest job that wrote it) or last used (the end of the newest
workflow job that read it; reads outside the workflow leave no record and do not count).

:func:`transitions` says which steps end when; :func:`apply_lifecycle` carries out those due:
push to the new remote, read every object back, record the move, then remove the output from
the workspace (an archive step) and from the old remote the objects no other kept output there
still references. Every interruption leaves at least one verified copy: nothing is removed
before the new remote verifiably holds every object, and a move whose removals were cut short
is finished (after verifying again) by the next run.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cellstrata.config import ConfigError
from cellstrata.io import atomic_path
from cellstrata.levels import LEVEL_PATHS, LIFECYCLE_PATH, RETIRED_PATH, level_path, retention_of
from cellstrata.stewardship.provenance import read_records
from cellstrata.stewardship.routing import Refusal, access_refusals, refusal_text, size_refusals
from cellstrata.stewardship.solutions import cost, remote_solution, solutions
from cellstrata.stewardship.tracked import (
    StewardshipError,
    TrackedOutput,
    lifecycle_moves,
    locked_outputs,
    tracked_outputs,
)
from cellstrata.workflow.failpoint import failpoint

log = logging.getLogger(__name__)

#: Days of a duration's unit (a month is 30 days, a year 365).
UNIT_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}
#: The points of a move where the reliability suite interrupts it (``CELLSTRATA_FAULT=
#: lifecycle/<plate>/<level>/<point>:after-write``).
MOVE_POINTS = ("pushed", "verified", "recorded", "removing")
#: What a step of a schedule may hold.
STEP_KEYS = ("keep", "archive", "for", "since")


def parse_duration(text: str) -> int:
    """Days of a duration (``90d``, ``6w``, ``3m``, ``1y``)."""
    match = re.fullmatch(r"([1-9][0-9]*)([dwmy])", str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 90d, 6w, 3m, 1y)")
    return int(match[1]) * UNIT_DAYS[match[2]]


def schedule_of(retention: Mapping[str, Any], level: str) -> list[dict[str, Any]] | None:
    """A level's schedule, or None when its retention is one of keep, archive, delete."""
    if level not in retention["levels"]:
        return None
    action = retention_of(dict(retention), level)
    return action if isinstance(action, list) else None


def step_kind(step: Mapping[str, Any]) -> str:
    """``keep`` or ``archive``."""
    return "keep" if "keep" in step else "archive"


def step_days(step: Mapping[str, Any]) -> int | None:
    """How long a step holds (None: the last step, for ever)."""
    given = step.get("keep", step.get("for"))
    return None if given is None else parse_duration(given)


def check_retention_forms(retention: Mapping[str, Any]) -> None:
    """A level's retention that is neither keep, archive, delete nor a well-formed schedule,
    said plainly (the schema, which allows both forms, would only say that it matches none).

    Raises
    ------
    ConfigError
        Naming ``retention.levels.<level>`` (and ``[<step>]``) and what is wrong.
    """
    example = "[{keep: 90d}, {archive: <remote>}]"
    for level, value in (retention.get("levels") or {}).items():
        where = f"retention.levels.{level}"
        if isinstance(value, str) and value not in ("keep", "archive", "delete"):
            raise ConfigError(
                f"{where}: {value!r} is not keep, archive or delete, nor a schedule such as "
                + example
            )
        if not isinstance(value, list):
            continue
        if len(value) < 2:
            raise ConfigError(f"{where}: a schedule has two steps or more, e.g. {example}")
        for index, step in enumerate(value):
            if not isinstance(step, dict) or set(step) - set(STEP_KEYS):
                raise ConfigError(
                    f"{where}[{index}]: {step!r}: a step is a mapping of {', '.join(STEP_KEYS)}"
                )
            for key in ("keep", "for"):
                if key in step:
                    try:
                        parse_duration(step[key])
                    except ValueError as err:
                        raise ConfigError(f"{where}[{index}].{key}: {err}") from None
            if step.get("since", "made") not in ("made", "used"):
                raise ConfigError(f"{where}[{index}].since: {step['since']!r} is not made or used")


def check_schedules(config: Mapping[str, Any]) -> None:
    """What the schema cannot check of the schedules: one action per step, keep first only,
    a duration on every step but the last, none on the last, remotes that exist.

    Raises
    ------
    ConfigError
        Naming ``retention.levels.<level>[<step>]`` and what is wrong.
    """
    remotes = config["storage"]["remotes"]
    for level in LEVEL_PATHS:
        schedule = schedule_of(config["retention"], level)
        for index, step in enumerate(schedule or []):
            where = f"retention.levels.{level}[{index}]"
            last = index == len(schedule) - 1
            if ("keep" in step) == ("archive" in step):
                raise ConfigError(f"{where}: give keep: <duration> or archive: <remote>: {step}")
            if "keep" in step and index:
                raise ConfigError(
                    f"{where}: keep after an archive step; a schedule moves data to slower "
                    "storage only (bring data back with `cellstrata pull`)"
                )
            if "keep" in step and "for" in step:
                raise ConfigError(f"{where}: keep already is the step's duration; drop for")
            if "archive" in step and step["archive"] not in remotes:
                raise ConfigError(
                    f"{where}: archive names remote {step['archive']!r}, not one of "
                    f"storage.remotes ({', '.join(remotes)})"
                )
            if last and step_days(step) is not None:
                raise ConfigError(
                    f"{where}: the last step holds for ever; a duration ({step}) would have "
                    "nothing to move on to"
                )
            if not last and step_days(step) is None:
                raise ConfigError(
                    f"{where}: every step but the last needs a duration (keep: 90d, or "
                    f"archive: {step.get('archive')} with for: 365d)"
                )


def _day_of(stamp: str) -> date:
    return datetime.fromisoformat(stamp).date()


def holding_output(path: str, outputs: Mapping[str, Any]) -> str | None:
    """Which of ``outputs`` (paths) holds a workspace-relative path: itself or a directory
    above it."""
    parts = Path(path).parts
    for end in range(len(parts), 0, -1):
        candidate = Path(*parts[:end]).as_posix()
        if candidate in outputs:
            return candidate
    return None


def made_and_used(
    paths: Sequence[str], records: Sequence[Mapping[str, Any]]
) -> dict[str, tuple[date | None, date | None]]:
    """Per output path (a file or directory): the day its newest job ended (made) and the day
    the newest workflow job that read it ended (used; None when no recorded job read it)."""
    by_path = dict.fromkeys(paths, True)
    made: dict[str, date] = {}
    used: dict[str, date] = {}
    for record in records:
        end = _day_of(record["end"])
        for kind, seen in (("outputs", made), ("inputs", used)):
            for item in record[kind]:
                owner = holding_output(item["path"], by_path)
                if owner is not None:
                    seen[owner] = max(end, seen.get(owner, end))
    return {p: (made.get(p), used.get(p)) for p in paths}


def _anchor(step: Mapping[str, Any], made: date | None, used: date | None) -> date | None:
    """The day a step's duration counts from."""
    return (used or made) if step.get("since", "made") == "used" else made


@dataclass(frozen=True)
class Transition:
    """The next step of an output's schedule: from which remote to which, and when."""

    out: TrackedOutput
    step: int
    source: str
    target: str
    due: date
    since: str

    def __str__(self) -> str:
        plate = self.out.plate or "all plates"
        return (
            f"{plate} {self.out.level} ({self.out.path}): step {self.step + 1}, archive on "
            f"{self.target} (from {self.source}), due {self.due} (counted from when it was "
            f"{self.since})"
        )


def transitions(
    config: Mapping[str, Any],
    workspace: str | os.PathLike = ".",
    *,
    outs: Sequence[TrackedOutput] | None = None,
) -> list[Transition]:
    """The next step of every tracked output whose level has a schedule, due or not, with its
    due day (outputs never made, whose made day is unknown, have none)."""
    workspace = Path(workspace)
    outs = tracked_outputs(config, workspace) if outs is None else outs
    moves = lifecycle_moves(workspace)
    scheduled = [o for o in outs if schedule_of(config["retention"], o.level)]
    days = made_and_used([o.path for o in scheduled], read_records(workspace / "results"))
    found = []
    for out in scheduled:
        schedule = schedule_of(config["retention"], out.level)
        current = moves.get(out.path, {}).get("step", 0)
        if current + 1 >= len(schedule):
            continue
        step = schedule[current]
        since = step.get("since", "made")
        anchor = _anchor(step, *days[out.path])
        if anchor is None:
            continue
        held = sum(step_days(s) for s in schedule[: current + 1])
        target = schedule[current + 1]["archive"]
        due = anchor + timedelta(days=held)
        found.append(Transition(out, current + 1, out.remote, target, due, since))
    return found


def _record(workspace: Path, out: TrackedOutput, **fields: Any) -> dict[str, Any]:
    """Update (or start) the lifecycle record of ``out`` with ``fields``; return it."""
    path = workspace / LIFECYCLE_PATH / f"{out.stage}.yaml"
    record = yaml.safe_load(path.read_text()) if path.exists() else {"path": out.path}
    history = fields.pop("history", None)
    record.update(fields)
    if history is not None:
        record.setdefault("history", []).append(history)
    with atomic_path(path) as tmp:  # a killed write leaves the previous record whole
        tmp.write_text(yaml.safe_dump(record, sort_keys=False))
    return record


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _objects_on(repo, workspace: Path, remote: str, skip: str) -> set[str]:
    """Objects that the kept outputs on ``remote`` other than ``skip`` reference: tracked
    outputs routed there and the retired versions' outputs recorded there (their directory
    listings read from the local cache, else from the remote)."""
    odb = repo.cloud.get_remote_odb(remote)
    wanted: set[str] = set()
    by_name = {stage.name: stage for stage in repo.index.stages}
    for stage in by_name.values():
        for out in stage.outs:
            if stage.name == skip or out.remote != remote or not out.hash_info.value:
                continue
            wanted.update(_listed(repo, odb, out.hash_info.value))
    for record in Path(workspace, RETIRED_PATH).glob("*.yaml"):
        for entry in yaml.safe_load(record.read_text()).get("outputs", []):
            if entry.get("remote") == remote and entry.get("md5"):
                wanted.update(_listed(repo, odb, entry["md5"]))
    return wanted


def _listed(repo, odb, oid: str) -> set[str]:
    """``oid`` and, for a directory, the objects its listing names."""
    found = {oid}
    if oid.endswith(".dir"):
        cached = Path(repo.cache.local.oid_to_path(oid))
        try:
            text = cached.read_text() if cached.exists() else odb.fs.cat_file(odb.oid_to_path(oid))
        except FileNotFoundError:  # neither here nor there: nothing more it could protect
            return found
        found.update(entry["md5"] for entry in json.loads(text))
    return found


def _remove_from(repo, workspace: Path, out: TrackedOutput, source: str, oids: list[str]) -> int:
    """Remove from ``source`` the objects of ``oids`` no other kept output there references;
    return how many were removed."""
    keep = _objects_on(repo, workspace, source, out.stage)
    odb = repo.cloud.get_remote_odb(source)
    removed = 0
    for oid in oids:
        if oid in keep:
            continue
        path = odb.oid_to_path(oid)
        if odb.fs.exists(path):
            odb.fs.rm(path)
            removed += 1
            failpoint("lifecycle", _fault_wildcards(out, "removing"), log)
    return removed


def _fault_wildcards(out: TrackedOutput, point: str) -> dict[str, str]:
    return {"plate": out.plate or "", "level": out.level, "point": point}


def _verified_on(workspace: Path, out: TrackedOutput, remote: str) -> dict[str, list[str]]:
    from cellstrata.stewardship.dvc import verify_remote

    return verify_remote(workspace, [out.stage], remote=remote)


def _move(
    config: Mapping[str, Any], workspace: Path, move: Transition, config_name: str
) -> dict[str, Any]:
    """Carry out one transition (see the module docstring); return its history entry."""
    from cellstrata.stewardship.dvc import (
        _dvc,
        _expected_objects,
        _present,
        _repo,
        _unverified,
        _write_dvc_yaml,
        check_directory_remotes,
        resend_objects,
    )

    out, target, source = move.out, move.target, move.source
    check_directory_remotes(config, workspace, roles={source, target})
    present = _present(workspace, out)
    if present:
        _dvc(workspace, "commit", "--force", out.stage)
    elif out.path not in locked_outputs(workspace):
        raise StewardshipError(f"{out.path}: neither in the workspace nor recorded in dvc.lock")
    else:  # archived already: its objects come from the remote that holds them
        _dvc(workspace, "fetch", "-r", source, out.stage)
    started = _now()
    resend_objects(workspace, _verified_on(workspace, out, target), remote=target)
    failpoint("lifecycle", _fault_wildcards(out, "pushed"), log)
    report = _verified_on(workspace, out, target)
    if report["missing"] or report["corrupt"]:
        raise _unverified(f"lifecycle {out.path}: not verified on {target}", workspace, report)
    failpoint("lifecycle", _fault_wildcards(out, "verified"), log)
    repo = _repo(workspace)
    stage = next(s for s in repo.index.stages if s.name == out.stage)
    oids = _expected_objects(repo, stage.outs[0])
    # From here on the new remote is where the output lives: dvc.yaml names it.
    _record(
        workspace,
        out,
        level=out.level,
        plate=out.plate,
        version=out.version,
        step=move.step,
        retention="archive",
        remote=target,
        pending={
            "remote": source if source != target else None,
            "objects": oids,
            "local": present,
        },
    )
    if (workspace / "dvc.yaml").exists():
        _write_dvc_yaml(config, config_name, workspace)
    failpoint("lifecycle", _fault_wildcards(out, "recorded"), log)
    return _finish(
        workspace,
        out,
        {
            "step": move.step,
            "from": source,
            "to": target,
            "due": move.due.isoformat(),
            "since": move.since,
            "started": started,
            "verified_objects": len(report["verified"]),
            "user": getpass.getuser(),
            "host": socket.gethostname(),
        },
        verified=True,
    )


def _finish(
    workspace: Path, out: TrackedOutput, history: dict[str, Any], *, verified: bool = False
) -> dict[str, Any]:
    """Remove what a recorded move left behind: the output in the workspace (an archive step)
    and the objects on its old remote no other kept output there references; close the
    record. A resumed move (not ``verified`` in this run) verifies the new remote first."""
    from cellstrata.stewardship.dvc import _present, _repo, _unverified

    record = lifecycle_moves(workspace)[out.path]
    pending = record["pending"]
    if not verified:
        report = _verified_on(workspace, out, record["remote"])
        if report["missing"] or report["corrupt"]:
            raise _unverified(
                f"lifecycle {out.path}: not verified on {record['remote']}, nothing removed",
                workspace,
                report,
            )
    local = bool(pending.get("local")) and _present(workspace, out)
    if local:
        path = workspace / out.path
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    removed = 0
    if pending.get("remote"):
        repo = _repo(workspace)
        removed = _remove_from(repo, workspace, out, pending["remote"], pending["objects"])
    history = {
        **history,
        "removed_locally": local,
        "removed_from_old": removed,
        "kept_on_old": len(pending["objects"]) - removed if pending.get("remote") else 0,
        "done": _now(),
    }
    _record(workspace, out, pending=None, history=history)
    return history


def apply_lifecycle(
    config: Mapping[str, Any],
    workspace: str | os.PathLike = ".",
    *,
    day: date | None = None,
    dry_run: bool = False,
    config_name: str = "config/config.yaml",
) -> tuple[list[Transition], list[Refusal]]:
    """Carry out the transitions due on ``day`` (default today); finish any move an
    interruption cut short first.

    Returns
    -------
    tuple
        The transitions carried out (or due, with ``dry_run``) and the refusals.

    Raises
    ------
    StewardshipError
        After the allowed moves, when any was refused (naming plate, level, remote, solution
        and rule), or when a move failed (nothing of it removed).
    """
    workspace = Path(workspace)
    day = day or date.today()
    outs = tracked_outputs(config, workspace)
    by_path = {o.path: o for o in outs}
    if not dry_run:
        for path, record in lifecycle_moves(workspace).items():
            if record.get("pending") and path in by_path:
                log.info("finishing the interrupted move of %s", path)
                _finish(workspace, by_path[path], {"resumed": True, "step": record["step"]})
    due = [t for t in transitions(config, workspace, outs=outs) if t.due <= day]
    found: list[Refusal] = []
    for move in due:
        found += access_refusals(config, [move.out], remote=move.target)
        found += size_refusals(
            config,
            [move.out],
            workspace,
            remote=move.target,
            tracked=outs,
            locked=locked_outputs(workspace),
        )
    refused = {r.path for r in found}
    allowed = [t for t in due if t.out.path not in refused]
    if not dry_run:
        for move in allowed:
            _move(config, workspace, move, config_name)
            log.info("moved %s to %s", move.out.path, move.target)
    if found:
        done = "".join(f"\n  - {t}" for t in allowed) or " none"
        raise StewardshipError(
            refusal_text("lifecycle", list(dict.fromkeys(found)))
            + f"\nthe others {'due' if dry_run else 'moved'}:{done}"
        )
    return allowed, found


def project_months(
    config: Mapping[str, Any],
    workspace: str | os.PathLike = ".",
    *,
    months: int,
    day: date | None = None,
    plates: int | None = None,
) -> pd.DataFrame:
    """The monthly storage cost over ``months`` months from ``day`` (default today), per level
    and in total, with the schedules applied: each plate's level costs, in each month, what the
    step of its schedule holding on that month's first day costs (a keep step: the workspace
    and its routed remote; an archive step: its remote). Levels never made yet are counted as
    made on ``day``; sizes and plain retentions as :func:`~cellstrata.stewardship.storage.
    storage_plan` gives them. With ``plates``, the cost is scaled from the config's plates to
    that many (as ``storage plan --plates`` does).

    Returns
    -------
    pandas.DataFrame
        One row per month and level (and ``total``): ``month``, ``date``, ``level``,
        ``monthly_usd``, ``monthly_usd_high``.
    """
    from cellstrata.stewardship.storage import _cost, storage_plan

    workspace = Path(workspace)
    day = day or date.today()
    plan = storage_plan(config, workspace)
    table = solutions(config)
    moves = lifecycle_moves(workspace)
    paths = {
        (r.plate, r.level, r.version): level_path(r.level, r.plate, r.version)
        for r in plan.itertuples()
        if r.level in LEVEL_PATHS
    }
    days = made_and_used(list(paths.values()), read_records(workspace / "results"))
    rows = []
    for r in plan.itertuples():
        schedule = schedule_of(config["retention"], r.level)
        if schedule is None:
            steps = [(date.min, (r.monthly_usd, r.monthly_usd_high))]
        else:
            path = paths[(r.plate, r.level, r.version)]
            made, used = days[path]
            current = moves.get(path, {}).get("step", 0)
            start, steps = date.min, []
            for index, step in enumerate(schedule):
                if step_kind(step) == "keep":
                    priced = _cost(config, r.plate, r.level, "keep", r.bytes)
                    monthly = (priced["monthly_usd"], priced["monthly_usd_high"])
                else:
                    monthly = cost(table[remote_solution(config, step["archive"])], r.bytes)[1]
                if index >= current:
                    steps.append((start, monthly))
                if step_days(step) is not None:
                    anchor = _anchor(step, made, used) or day
                    start = anchor + timedelta(
                        days=sum(step_days(s) for s in schedule[: index + 1])
                    )
        steps[0] = (date.min, steps[0][1])  # the current step holds until the next begins
        for month in range(months):
            when = day + timedelta(days=30 * month)
            low, high = next(m for s, m in reversed(steps) if s <= when)
            rows.append(
                {
                    "month": month + 1,
                    "date": when.isoformat(),
                    "level": r.level,
                    "monthly_usd": low,
                    "monthly_usd_high": high,
                }
            )
    frame = pd.DataFrame(rows)
    frame = frame.groupby(["month", "date", "level"], sort=False, as_index=False).sum()
    if plates is not None:
        scale = plates / len(config["plates"])
        frame[["monthly_usd", "monthly_usd_high"]] *= scale
    total = frame.groupby(["month", "date"], as_index=False)[
        ["monthly_usd", "monthly_usd_high"]
    ].sum()
    total.insert(2, "level", "total")
    return pd.concat([frame, total]).sort_values(["month"], kind="stable").reset_index(drop=True)


def format_projection(frame: pd.DataFrame) -> str:
    """The projection as a terminal table: months as rows, levels and the total as columns,
    a cost range shown as both ends."""
    from cellstrata.stewardship.storage import usd_range

    shown = frame.assign(
        usd=[
            usd_range(a, b) for a, b in zip(frame.monthly_usd, frame.monthly_usd_high, strict=True)
        ]
    )
    wide = shown.pivot(index=["month", "date"], columns="level", values="usd")
    order = [c for c in dict.fromkeys(frame["level"]) if c != "total"] + ["total"]
    horizon = frame[frame["level"] == "total"]
    return (
        wide[order].reset_index().to_string(index=False)
        + f"\nover {horizon['month'].max()} months: "
        + usd_range(horizon["monthly_usd"].sum(), horizon["monthly_usd_high"].sum())
    )


def projection_figure(
    frame: pd.DataFrame, out: str | os.PathLike, *, title: str | None = None
) -> None:
    """A figure of :func:`project_months`: the monthly cost of each level (low end, the high
    end of a range dashed) and the total."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for level, group in frame.groupby("level", sort=False):
        width = 2.5 if level == "total" else 1.2
        (line,) = ax.plot(group["month"], group["monthly_usd"], label=level, linewidth=width)
        if (group["monthly_usd_high"] != group["monthly_usd"]).any():
            ax.plot(group["month"], group["monthly_usd_high"], "--", color=line.get_color())
    ax.set_xlabel(f"month (from {frame['date'].iloc[0]})")
    ax.set_ylabel("USD per month")
    ax.set_title(title or "Storage cost with the retention schedules applied")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def write_projection_figure(
    config: Mapping[str, Any],
    out: str | os.PathLike,
    *,
    months: int,
    workspace: str | os.PathLike = ".",
) -> None:
    """The report's figure: :func:`project_months` from today drawn to ``out``."""
    projection_figure(project_months(config, workspace, months=months), out)
