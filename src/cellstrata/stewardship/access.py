"""``cellstrata access``: per plate and level, whose data it is, who may see it today, where it
is, where it may go, and any violation found in what is already on a remote (a config edited
after a push, a remote whose access was widened)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from cellstrata.stewardship.dvc import remote_has
from cellstrata.stewardship.origin import allowed_on, data_access, embargo_note, plate_origin
from cellstrata.stewardship.routing import access_refusals
from cellstrata.stewardship.solutions import remote_access, remote_solution
from cellstrata.stewardship.tracked import locked_outputs, tracked_outputs

#: Origin keys the report shows, joined over the plates of an output made from several.
ORIGIN_KEYS = ("source", "holder", "license", "agreement")


def _joined(values: list[Any]) -> str | None:
    found = list(dict.fromkeys(str(v) for v in values if v is not None))
    return ", ".join(found) or None


def access_report(
    config: Mapping[str, Any], workspace: str | os.PathLike = ".", *, day: date | None = None
) -> pd.DataFrame:
    """One row per tracked output (a plate's level, an experiment table, provenance,
    platemaps): origin, access on ``day`` (default today), embargo, retention, the remote the
    routing sends it to and its solution, where it is, the remotes it may go to, and the
    violations found.

    Violations: the routing sends it to a remote its access forbids (push and ``dvc setup``
    refuse that), or a remote its access forbids holds it already (its ``dvc.lock`` hash is
    there). Only those remotes are asked, so the report reads no remote the data may be on.
    """
    workspace = Path(workspace)
    day = day or date.today()
    remotes = list(config["storage"]["remotes"])
    locked = locked_outputs(workspace)
    outs = tracked_outputs(config, workspace)
    routed = {r.path: r for r in access_refusals(config, outs)}
    rows = []
    for out in outs:
        origins = [plate_origin(config, p) for p in out.plates]
        access = data_access(config, out.plates, out.level, day)
        may_go = [r for r in remotes if allowed_on(access, remote_access(config, r))]
        oid = locked.get(out.path, {}).get("md5")
        where = []
        if (workspace / out.path).exists():
            where.append("workspace")
        violations = []
        if out.path in routed:
            violations.append(f"routing: {routed[out.path].rule} (storage.routes)")
        for remote in remotes if oid else []:
            allowed = remote in may_go
            if allowed and remote != out.remote:
                continue
            held = remote_has(workspace, remote, oid)
            if held:
                where.append(f"remote {remote}")
                if not allowed:
                    violations.append(
                        f"on remote {remote} ({remote_access(config, remote)}, solution "
                        f"{remote_solution(config, remote)}) but access {access}"
                    )
        rows.append(
            {
                "plate": out.plate or "all",
                "level": out.level,
                "version": out.version,
                "path": out.path,
                **{key: _joined([o.get(key) for o in origins]) for key in ORIGIN_KEYS},
                "access": access,
                "embargo": _joined([embargo_note(o, day) or None for o in origins]),
                "retention": out.retention,
                "remote": out.remote,
                "solution": remote_solution(config, out.remote),
                "where": ", ".join(where) or "nowhere yet",
                "may_go": ", ".join(may_go),
                "violation": "; ".join(violations),
            }
        )
    return pd.DataFrame(rows)
