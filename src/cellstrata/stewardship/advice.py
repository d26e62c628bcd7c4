"""``cellstrata storage advise``: for each plate and level, the storage solutions that meet the
level's needs, its access and the solutions' limits, cheapest first over a horizon, and why
each other solution is excluded."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from typing import Any

import pandas as pd

from cellstrata.levels import LEVELS, retention_kind
from cellstrata.stewardship.origin import allowed_on, data_access, embargo_note, plate_origin
from cellstrata.stewardship.solutions import (
    cost,
    human_size,
    limit_problems,
    need_problems,
    solutions,
)
from cellstrata.stewardship.storage import storage_plan, usd_range


def _datasets(
    config: Mapping[str, Any], workspace: str | os.PathLike, plates: int | None, day: date
) -> pd.DataFrame:
    """One row per dataset to place: plate, level, bytes, files, size source, access on
    ``day`` and the lab's total of the level (every plate's), from the storage plan (so before
    a run, estimated). With ``plates``, one row per level for that many plates."""
    plan = storage_plan(config, workspace)
    sizes = plan.groupby(["plate", "level"], sort=False).agg(
        bytes=("bytes", "sum"),
        files=("files", "sum"),
        size_source=("size_source", "first"),
    )
    sizes = sizes.reset_index()
    sizes["access"] = [
        data_access(config, [p], level, day)
        for p, level in zip(sizes["plate"], sizes["level"], strict=True)
    ]
    if plates is None:
        sizes["total"] = sizes.groupby("level")["bytes"].transform("sum")
        return sizes
    names = [p["name"] for p in config["plates"]]
    per_level = sizes.groupby("level", sort=False).agg(
        bytes=("bytes", "mean"), files=("files", "mean"), size_source=("size_source", "first")
    )
    per_level[["bytes", "files"]] = (per_level[["bytes", "files"]] * plates).round()
    per_level["access"] = [data_access(config, names, level, day) for level in per_level.index]
    per_level["total"] = per_level["bytes"]
    per_level.insert(0, "plate", f"{plates} plates")
    return per_level.reset_index()[[*sizes.columns, "total"]]


def _access_reason(
    config: Mapping[str, Any], name: str, readers: str, access: str, plate: str, day: date
) -> str:
    """Why data of ``access`` may not go to solution ``name`` that ``readers`` can read."""
    names = (
        [p["name"] for p in config["plates"]]
        if plate not in {p["name"] for p in config["plates"]}
        else [plate]
    )
    notes = [embargo_note(plate_origin(config, p), day) for p in names]
    notes = [n for n in notes if n and not n.startswith("ended")]
    embargo = f" (embargo {'; '.join(notes)})" if notes else ""
    return f"{name}: {readers}, plate {access}{embargo}"


def _merged(name: str, reasons: list[str]) -> str:
    """Reasons about one solution as one: ``idr: public, plate lab; longevity ...``."""
    return f"{name}: " + "; ".join(r.removeprefix(f"{name}: ") for r in reasons) if reasons else ""


def advise(
    config: Mapping[str, Any],
    workspace: str | os.PathLike = ".",
    *,
    plates: int | None = None,
    months: int = 36,
    day: date | None = None,
) -> pd.DataFrame:
    """Per plate x level x storage solution: whether the solution suits the level, its cost
    over ``months``, and the reason it is excluded.

    A solution is excluded when the data's access on ``day`` (default today) forbids it (only
    public data on public solutions), when it lacks what the level needs
    (``storage.needs``: speed, longevity, version control, by the solution or by DVC on it), or
    when the dataset breaks its size limits (per file: the level's mean file size; per
    dataset; in total: the level over all plates).

    Parameters
    ----------
    config : mapping
        A validated configuration.
    workspace : str or os.PathLike
        Where sizes are measured (estimated from the raw images for levels not built).
    plates : int, optional
        Advise for this many plates like the configured ones: one row per level and solution.
    months : int, default 36
        The horizon: cost is one-time + months x monthly.
    day : datetime.date, optional
        The day whose access counts (embargoes); default today.

    Returns
    -------
    pandas.DataFrame
        Columns plate, level, retention, access, bytes, size_source, solution, label,
        suitable, rank (1 = cheapest suitable), cost_usd, cost_usd_high, reason; sorted per
        dataset: suitable ones cheapest first, then the excluded.
    """
    day = day or date.today()
    table = solutions(config)
    rows = []
    for data in _datasets(config, workspace, plates, day).to_dict("records"):
        need = config["storage"]["needs"][data["level"]]
        plate = data["plate"]
        retention = retention_kind(
            config["retention"], data["level"], plate if plates is None else None
        )
        largest = data["bytes"] / max(data["files"], 1)
        for name, solution in table.items():
            reasons = []
            if not allowed_on(data["access"], solution["access"]):
                reasons.append(
                    _access_reason(config, name, solution["access"], data["access"], plate, day)
                )
            reasons += need_problems(name, solution, need)
            reasons += limit_problems(
                name, solution, size=data["bytes"], largest_file=largest, total=data["total"]
            )
            (once_low, once_high), (month_low, month_high) = cost(solution, data["bytes"])
            rows.append(
                {
                    "plate": plate,
                    "level": data["level"],
                    "retention": retention,
                    "access": data["access"],
                    "bytes": int(data["bytes"]),
                    "size_source": data["size_source"],
                    "solution": name,
                    "label": solution.get("label", name),
                    "suitable": not reasons,
                    "cost_usd": round(once_low + months * month_low, 2),
                    "cost_usd_high": round(once_high + months * month_high, 2),
                    "reason": _merged(name, reasons),
                }
            )
    frame = pd.DataFrame(rows)
    order = {level: i for i, level in enumerate(LEVELS)}
    frame["_level"] = frame["level"].map(order)
    frame["_plate"] = frame["plate"].map({p: i for i, p in enumerate(frame["plate"].unique())})
    frame = frame.sort_values(
        ["_plate", "_level", "suitable", "cost_usd", "cost_usd_high"],
        ascending=[True, True, False, True, True],
        kind="stable",
    )
    frame["rank"] = (frame[frame["suitable"]].groupby(["plate", "level"]).cumcount() + 1).astype(
        "Int64"
    )
    columns = [c for c in frame.columns if not c.startswith("_") and c != "rank"]
    columns.insert(columns.index("suitable") + 1, "rank")
    return frame[columns].reset_index(drop=True)


def format_advice(frame: pd.DataFrame, months: int) -> str:
    """The advice as text: per dataset, the suitable solutions cheapest first with their cost
    over the horizon, then each excluded one with its reason."""
    lines = []
    for (plate, level), group in frame.groupby(["plate", "level"], sort=False):
        first = group.iloc[0]
        lines.append(
            f"{plate} {level}: {human_size(first['bytes'])}, access {first['access']}, "
            f"retention {first['retention']}"
        )
        for row in group[group["suitable"]].itertuples():
            cost_text = usd_range(row.cost_usd, row.cost_usd_high)
            lines.append(
                f"  {row.rank}. {row.solution} ({row.label}): {cost_text} over {months} months"
            )
        if not group["suitable"].any():
            lines.append("  no solution meets this level's needs, access and limits")
        for row in group[~group["suitable"]].itertuples():
            lines.append(f"  excluded {row.reason}")
    return "\n".join(lines)
