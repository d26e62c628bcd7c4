"""The catalog: one self-contained HTML page of where everything in the experiment is.

Plates x levels with their state (present, on remote, archived, deleted and remakeable,
missing), access and embargo, the storage solution and size and monthly cost of each, the
method versions side by side, the lifecycle transitions coming up, and for every output its
lineage back to the raw images. No script, no style sheet, no image from elsewhere: the page
works opened from disk, with no server and no network.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from cellstrata.levels import level_path
from cellstrata.stewardship.provenance import lineage, read_records
from cellstrata.stewardship.solutions import human_size

#: A state's words on the page and its colour.
STATES = {
    "present": ("present", "#2e7d32"),
    "on remote": ("on remote", "#1565c0"),
    "archived": ("archived", "#6a1b9a"),
    "deleted": ("deleted, remakeable", "#ef6c00"),
    "not built": ("not built", "#757575"),
    "missing": ("missing", "#c62828"),
}

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; font-size: 13px; }
th { background: #f3f3f3; }
.state { color: white; border-radius: 3px; padding: 1px 5px; font-weight: bold; }
.small { color: #555; font-size: 11px; }
details { margin: 2px 0; } summary { cursor: pointer; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _cell(
    row: Mapping[str, Any],
    access: Mapping[str, Any] | None,
    cost: tuple[float, float] | None,
) -> str:
    words, colour = STATES.get(row["state"], (row["state"], "#000"))
    parts = [f'<span class="state" style="background:{colour}">{_e(words)}</span>']
    if row["bytes"]:
        parts.append(f"{_e(human_size(row['bytes']))}, {int(row['files'])} file(s)")
    if row.get("solution"):
        parts.append(f"{_e(row['solution'])} (remote {_e(row['remote'])})")
    if cost is not None:
        parts.append(f"${cost[0]:.4f} once, ${cost[1]:.4f}/month")
    if access is not None:
        embargo = f", embargo {access['embargo']}" if access.get("embargo") else ""
        parts.append(f"access {_e(access['access'])}{_e(embargo)}")
    if row.get("note"):
        parts.append(_e(row["note"]))
    return '<br><span class="small">'.join([parts[0], *parts[1:]]) + "</span>" * (len(parts) > 1)


def _lineage_html(path: str, records: list) -> str:
    try:
        chain = lineage(path, records)
    except FileNotFoundError:
        return '<span class="small">no provenance record (not made by this workflow)</span>'
    items = []
    for job in chain:
        where = ", ".join(f"{k}={v}" for k, v in job["wildcards"].items())
        raw = f"; {len(job['raw_inputs'])} raw input(s)" if job["raw_inputs"] else ""
        items.append(
            f"<li>{'&nbsp;' * 4 * job['depth']}{_e(job['rule'])} ({_e(where)}) "
            f"{_e(job['start'][:19])}{_e(raw)}</li>"
        )
    return f"<details><summary>lineage of {_e(path)}</summary><ul>{''.join(items)}</ul></details>"


def _raw_rows(plan: Any, access: Mapping[tuple, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The raw images' cells, in the shape of status rows: status leaves raw out (it is the
    lab's input, not an output), the storage plan counts it from the manifest or the disk."""
    rows = []
    for r in plan[plan["level"] == "raw"].to_dict("records"):
        where = access.get((r["plate"], "raw", None), {})
        rows.append(
            {
                "plate": r["plate"],
                "level": "raw",
                "version": None,
                # "unknown": neither a manifest nor an image root to count.
                "state": "missing" if r["size_source"] == "unknown" else "present",
                "files": r["files"],
                "bytes": r["bytes"],
                "remote": where.get("remote"),
                "solution": where.get("solution"),
            }
        )
    return rows


def catalog_html(
    config: Mapping[str, Any], workspace: str | os.PathLike = ".", *, day: date | None = None
) -> str:
    """The catalog page of the workspace's experiment (see the module docstring)."""
    from cellstrata.stewardship.access import access_report
    from cellstrata.stewardship.lifecycle import transitions
    from cellstrata.stewardship.status import status
    from cellstrata.stewardship.storage import storage_plan

    workspace = Path(workspace)
    day = day or date.today()
    state = status(config, workspace)
    access = {
        (r["plate"], r["level"], r["version"]): r
        for r in access_report(config, workspace, day=day).to_dict("records")
    }
    plan = storage_plan(config, workspace)
    costs = {
        (r.plate, r.level, r.version): (r.one_time_usd, r.monthly_usd) for r in plan.itertuples()
    }
    records = read_records(workspace / "results")
    rows = _raw_rows(plan, access) + state.to_dict("records")
    plates = list(dict.fromkeys(r["plate"] for r in rows))
    levels = list(dict.fromkeys(r["level"] for r in rows))
    current = {}
    for row in rows:  # the first version listed is the config's main one
        current.setdefault((row["plate"], row["level"]), row)
    title = f"cellstrata catalog: {config['experiment']}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="small">Workspace {_e(workspace.resolve())}; access on {day}. Made by '
        "<code>cellstrata catalog</code>; <code>cellstrata status</code>, <code>access</code> "
        "and <code>storage plan</code> give the same figures as tables.</p>",
        "<h2>Plates x levels</h2>",
        '<table id="levels"><tr><th>plate</th>'
        + "".join(f"<th>{_e(level)}</th>" for level in levels)
        + "</tr>",
    ]
    for plate in plates:
        cells = []
        for level in levels:
            row = current.get((plate, level))
            if row is None:
                cells.append(f'<td data-plate="{_e(plate)}" data-level="{_e(level)}">-</td>')
                continue
            key = (plate, level, row["version"])
            cells.append(
                f'<td data-plate="{_e(plate)}" data-level="{_e(level)}" '
                f'data-state="{_e(row["state"])}">'
                + _cell(row, access.get(key), costs.get(key))
                + "</td>"
            )
        out.append(f'<tr><th class="plate">{_e(plate)}</th>{"".join(cells)}</tr>')
    out.append("</table>")
    versioned = [r for r in rows if r["version"]]
    versions = list(dict.fromkeys(r["version"] for r in versioned))
    out += [
        "<h2>Method versions side by side</h2>",
        '<table id="versions"><tr><th>plate</th><th>level</th>'
        + "".join(f"<th>{_e(v)}</th>" for v in versions)
        + "</tr>",
    ]
    by_version = {(r["plate"], r["level"], r["version"]): r for r in versioned}
    for plate in plates:
        for level in dict.fromkeys(r["level"] for r in versioned):
            cells = "".join(
                "<td>"
                + (
                    _cell(by_version[(plate, level, v)], None, costs.get((plate, level, v)))
                    if (plate, level, v) in by_version
                    else "-"
                )
                + "</td>"
                for v in versions
            )
            out.append(f"<tr><td>{_e(plate)}</td><td>{_e(level)}</td>{cells}</tr>")
    out.append("</table>")
    out += [
        "<h2>Lifecycle transitions coming up</h2>",
        '<table id="lifecycle"><tr><th>plate</th><th>level</th><th>path</th><th>step</th>'
        "<th>from</th><th>to</th><th>due</th><th>counted from</th></tr>",
    ]
    upcoming = sorted(transitions(config, workspace), key=lambda t: t.due)
    for move in upcoming:
        overdue = " (due now)" if move.due <= day else ""
        out.append(
            f"<tr><td>{_e(move.out.plate)}</td><td>{_e(move.out.level)}</td>"
            f"<td>{_e(move.out.path)}</td><td>{move.step + 1}</td><td>{_e(move.source)}</td>"
            f"<td>{_e(move.target)}</td><td>{move.due}{overdue}</td><td>{_e(move.since)}</td></tr>"
        )
    if not upcoming:
        out.append('<tr><td colspan="8">none: no level has a retention schedule</td></tr>')
    out += ["</table>", "<h2>Lineage back to the raw images</h2>", '<div id="lineage">']
    for plate in plates:
        out.append(f"<h3>{_e(plate)}</h3>")
        for row in rows:
            # Raw images are where every lineage ends, made by no job.
            if row["plate"] == plate and row["level"] != "raw" and row["state"] != "not built":
                path = level_path(row["level"], plate, row["version"])
                out.append(_lineage_html(path, records))
    out += ["</div>", "</body></html>"]
    return "\n".join(out)


def write_catalog(
    config: Mapping[str, Any],
    out: str | os.PathLike,
    workspace: str | os.PathLike = ".",
    *,
    day: date | None = None,
) -> Path:
    """Write :func:`catalog_html` to ``out``; return its path."""
    from cellstrata.io import atomic_path

    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(catalog_html(config, workspace, day=day), encoding="utf-8")
    return out
