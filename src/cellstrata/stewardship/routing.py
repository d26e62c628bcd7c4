"""Which remote receives each tracked output (``storage.routes``), and the rules every move
obeys: no data on a remote wider than its access, nothing over a solution's size limits.

Push, archive, pull, retire and ``dvc setup`` ask :func:`refusals` before they send anything;
a refused output is named with its plate, level, remote, solution and the rule it breaks, and
the other outputs go on only where the routing sends them to remotes they are allowed on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from cellstrata.stewardship.origin import allowed_on, data_access, embargo_note, plate_origin
from cellstrata.stewardship.solutions import (
    limit_problems,
    remote_access,
    remote_solution,
    solutions,
)


def route(
    config: Mapping[str, Any], *, level: str, plate: str | None, retention: str, access: str
) -> str:
    """The remote of the first route of ``storage.routes`` whose conditions all hold (a
    condition a route does not give always holds); ``plate`` None for outputs of every plate.

    Raises
    ------
    ValueError
        When no route matches (the routes need a last one without conditions).
    """
    for entry in config["storage"]["routes"]:
        if (
            level in entry.get("levels", [level])
            and retention in entry.get("retention", [retention])
            and access in entry.get("access", [access])
            and (plate is None or plate in entry.get("plates", [plate]))
            and (plate is not None or "plates" not in entry)
        ):
            return entry["remote"]
    raise ValueError(
        f"storage.routes: no route for level {level} of {plate or 'every plate'} "
        f"(retention {retention}, access {access}); end the routes with one without "
        "conditions, e.g. {remote: default}"
    )


@dataclass(frozen=True)
class Refusal:
    """An output that must not go where a move would send it, and why."""

    path: str
    level: str
    plate: str | None
    remote: str
    solution: str
    rule: str

    def __str__(self) -> str:
        plate = f"plate {self.plate}" if self.plate else "every plate"
        return (
            f"{plate}, level {self.level} ({self.path}) -> remote {self.remote} "
            f"(solution {self.solution}): {self.rule}"
        )


def output_size(workspace: Path, path: str, locked: Mapping[str, Any]) -> tuple[int, int]:
    """Bytes of a tracked output and of its largest file: on disk, else as ``dvc.lock``
    records it (archived; its largest file then counted as the whole)."""
    full = workspace / path
    if full.is_file():
        return full.stat().st_size, full.stat().st_size
    sizes = (
        [p.stat().st_size for p in full.rglob("*") if p.is_file() and not p.name.startswith(".")]
        if full.is_dir()
        else []
    )
    if sizes:
        return sum(sizes), max(sizes)
    size = int(locked.get(path, {}).get("size", 0))
    return size, size


def access_refusals(
    config: Mapping[str, Any],
    outs: Sequence[Any],
    *,
    remote: str | None = None,
    day: date | None = None,
) -> list[Refusal]:
    """The outputs of ``outs`` (:class:`~cellstrata.stewardship.tracked.TrackedOutput`) whose
    access forbids their routed remote, or ``remote`` when given (an explicit move).

    Access is the strictest over the plates' whole schedules, as the routing's; with ``day``
    (an explicit move after an embargo ends), the access on that day.
    """
    found = []
    for out in outs:
        target = remote or out.remote
        readers = remote_access(config, target)
        access = out.access if day is None else data_access(config, out.plates, out.level, day)
        if not allowed_on(access, readers):
            rule = _access_rule(config, out, access, readers, day)
            found.append(
                Refusal(
                    out.path, out.level, out.plate, target, remote_solution(config, target), rule
                )
            )
    return found


def size_refusals(
    config: Mapping[str, Any],
    outs: Sequence[Any],
    workspace: str | os.PathLike = ".",
    *,
    remote: str | None = None,
    tracked: Sequence[Any] | None = None,
    locked: Mapping[str, Any] | None = None,
) -> list[Refusal]:
    """The outputs of ``outs`` over a size limit of the solution of their routed remote (or
    ``remote``). A solution's ``limit_gb_total`` is checked against what this workspace puts
    there: every output of ``tracked`` (default ``outs``) routed to a remote of that solution,
    plus ``outs`` when they go to ``remote``; sizes from the workspace, else from ``locked``
    (the outputs ``dvc.lock`` records: archived ones).
    """
    workspace = Path(workspace)
    table = solutions(config)
    locked = locked or {}
    sizes = {o.path: output_size(workspace, o.path, locked) for o in [*(tracked or []), *outs]}
    totals: dict[str, int] = {}
    for out in {o.path: o for o in (tracked or outs)}.values():
        name = remote_solution(config, out.remote)
        totals[name] = totals.get(name, 0) + sizes[out.path][0]
    if remote is not None:
        name = remote_solution(config, remote)
        totals[name] = totals.get(name, 0) + sum(sizes[o.path][0] for o in outs)
    found = []
    for out in outs:
        target = remote or out.remote
        name = remote_solution(config, target)
        size, largest = sizes[out.path]
        problems = limit_problems(
            name, table[name], size=size, largest_file=largest, total=totals[name]
        )
        found += [Refusal(out.path, out.level, out.plate, target, name, p) for p in problems]
    return found


def refusal_text(title: str, found: Sequence[Refusal]) -> str:
    """A refusal as the error says it: what was refused, each output and its rule."""
    lines = [f"{title}: {len(found)} refused, nothing of them sent:"]
    lines += [f"  - {r}" for r in found]
    return "\n".join(lines)


def _access_rule(
    config: Mapping[str, Any], out: Any, access: str, readers: str, day: date | None
) -> str:
    """Why data of ``access`` may not go to a remote ``readers`` can read."""
    embargoes = [
        f"{p} embargoed {embargo_note(plate_origin(config, p), day or date.min)}"
        for p in out.plates
        if plate_origin(config, p).get("embargo_until")
    ]
    when = "on that day" if day is not None else "over its plates' whole schedule"
    return (
        f"access {access} ({when}{'; ' + ', '.join(embargoes) if embargoes else ''}) on a "
        f"{readers} remote: only public data may go to a public remote"
    )
