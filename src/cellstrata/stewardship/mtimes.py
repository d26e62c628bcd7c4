"""Modification times of pulled files: DVC checks files out with the time of the pull, which
would make Snakemake re-run every job downstream; the recorded job ends put them back in order."""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from cellstrata.levels import PROVENANCE_ROOT


def _recorded_ends(workspace: Path) -> dict[str, float]:
    """Recorded end time of the job behind each output and record file (workspace-relative
    paths); a directory's ``.snakemake_timestamp`` gets the newest end of the outputs in it."""
    ends: dict[str, float] = {}
    for record_file in sorted(Path(workspace, PROVENANCE_ROOT).rglob("*.json")):
        record = json.loads(record_file.read_text())
        end = datetime.fromisoformat(record["end"]).timestamp()
        ends[record_file.relative_to(workspace).as_posix()] = end
        for output in record["outputs"]:
            ends[output["path"]] = end
    directories: dict[str, float] = {}
    for path, end in ends.items():
        for parent in Path(path).parents[:-1]:
            key = f"{parent.as_posix()}/.snakemake_timestamp"
            directories[key] = max(end, directories.get(key, end))
    return {**directories, **ends}


def _clock(anchors: Sequence[tuple[float, float]], newest: float) -> Callable[[float], float]:
    """Map recorded end times onto this workspace's file times, keeping their order.

    ``anchors``: (recorded end, modification time) of the outputs in the workspace that are
    not being restored. A time maps to no later than every anchor of a later end (the
    outputs made from it stay up to date) and no earlier than every anchor of an earlier end
    (it stays up to date with what it was made from); between anchors it is interpolated,
    after the last one it advances as recorded, up to now. Without anchors, all times shift
    together so that ``newest`` is now.
    """
    now = time.time()
    if not anchors:
        return lambda end: end + now - newest
    by_end: dict[float, list[float]] = {}
    for end, mtime in anchors:
        by_end.setdefault(end, []).append(mtime)
    ends = sorted(by_end)
    # lows[i]: the newest anchor up to ends[i]; highs[i]: the oldest from ends[i] on.
    lows = list(itertools.accumulate((max(by_end[e]) for e in ends), max))
    highs = list(itertools.accumulate((min(by_end[e]) for e in reversed(ends)), min))[::-1]
    xs, ys = [*ends], [*highs]
    if newest > ends[-1]:
        xs.append(newest)
        ys.append(max(lows[-1], min(now, lows[-1] + newest - ends[-1])))

    def clock(end: float) -> float:
        stamp = ys[0] - (xs[0] - end) if end < xs[0] else float(np.interp(end, xs, ys))
        before = bisect.bisect_left(ends, end)
        if before:
            stamp = max(stamp, lows[before - 1])
        after = bisect.bisect_right(ends, end)
        if after < len(ends):
            stamp = min(stamp, highs[after])
        return stamp

    return clock


def restore_mtimes(workspace: str | os.PathLike, paths: Sequence[str]) -> int:
    """Give pulled files modification times in the order their jobs ran; return how many.

    Outputs get their job's recorded end time (a record file too), a directory output's
    ``.snakemake_timestamp`` the newest time beside it, and files no job made (platemaps, raw
    images) a time before every output, as sources. These times are then anchored to the
    outputs already in the workspace (:func:`_clock`): a pulled file is never newer than an
    output of a later job there, so pulling a level back into a complete workspace makes
    nothing look out of date; with nothing there (a collaborator's clone), the newest pulled
    file is now.
    """
    workspace = Path(workspace)
    ends = _recorded_ends(workspace)
    files = []
    for path in paths:
        full = workspace / path
        files += [p for p in full.rglob("*") if p.is_file()] if full.is_dir() else [full]
    stamped: dict[Path, float] = {}
    sources = []
    for file in files:
        relative = file.relative_to(workspace).as_posix()
        if relative in ends:
            stamped[file] = ends[relative]
        elif file.name != ".snakemake_timestamp":
            sources.append(file)
    if not stamped:
        return 0
    stamped.update(dict.fromkeys(sources, min(stamped.values()) - 1))
    pulled = {file.relative_to(workspace).as_posix() for file in files}
    anchors = []
    for path, end in ends.items():
        if path not in pulled:
            with contextlib.suppress(OSError):  # not in the workspace: no anchor
                anchors.append((end, (workspace / path).stat().st_mtime))
    clock = _clock(anchors, max(stamped.values()))
    for file, end in stamped.items():
        stamp = clock(end)
        os.utime(file, (stamp, stamp))
    return len(stamped)
