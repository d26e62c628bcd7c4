"""Origin and access: whose data a plate is, who may see each of its levels, and when that
changes (an embargo).

Access goes from widest to strictest: ``public`` (anyone), ``lab`` (the lab's members),
``restricted`` (only those the data-use agreement names). A level derived from several plates
(an experiment table) is as strict as the strictest of them, unless the plates' origin grants
that level an explicit ``derived_access``. Data that is not public never goes to a remote
anyone can read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from cellstrata.config import ConfigError, schema_default

#: Data access, widest first.
ACCESS = ("public", "lab", "restricted")
#: Remote (and storage solution) access, widest first.
REMOTE_ACCESS = ("public", "private")


def plate_origin(config: Mapping[str, Any], plate: str) -> dict[str, Any]:
    """The origin of a plate: its own ``origin`` keys over the experiment-wide ``origin``
    over the schema's defaults (source own, access lab)."""
    entry = next(p for p in config["plates"] if p["name"] == plate)
    return {**schema_default("origin"), **config.get("origin", {}), **entry.get("origin", {})}


def parse_day(text: str | date) -> date:
    """A ``YYYY-MM-DD`` date (``--today``, ``embargo_until``)."""
    if isinstance(text, date):
        return text
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def check_origin(where: str, origin: Mapping[str, Any]) -> None:
    """What the schema cannot check of an origin: an embargo has a date and an access after it,
    and hides something.

    Raises
    ------
    ConfigError
        Naming ``where`` (e.g. ``plates[SYN02].origin``) and the key.
    """
    until = origin.get("embargo_until")
    if until is None:
        if origin.get("after_embargo") is not None:
            raise ConfigError(f"{where}: after_embargo without embargo_until")
        return
    try:
        parse_day(until)
    except ValueError as err:
        raise ConfigError(f"{where}.embargo_until: {err}") from None
    if origin.get("after_embargo") is None:
        raise ConfigError(
            f"{where}: embargo_until {until} needs after_embargo (the access from that day on, "
            "e.g. public)"
        )
    if origin["access"] == "public":
        raise ConfigError(
            f"{where}: access public with an embargo until {until}: an embargoed plate's access "
            "is lab or restricted until then"
        )


def strictest(accesses: Iterable[str]) -> str:
    """The strictest of data accesses (``public`` when there are none)."""
    return max(accesses, key=ACCESS.index, default="public")


def level_access(origin: Mapping[str, Any], level: str, day: date | None = None) -> str:
    """Who may see ``level`` of a plate of this origin on ``day``; with no day, the strictest
    access over the plate's whole schedule (before and after its embargo)."""
    granted = origin.get("derived_access", {}).get(level) if level != "raw" else None
    if granted is not None:
        return granted
    until = origin.get("embargo_until")
    if until is None:
        return origin["access"]
    if day is None:
        return strictest([origin["access"], origin["after_embargo"]])
    return origin["after_embargo"] if day >= parse_day(until) else origin["access"]


def data_access(
    config: Mapping[str, Any], plates: Iterable[str], level: str, day: date | None = None
) -> str:
    """The access of data derived from ``plates`` at ``level`` (see :func:`level_access`)."""
    return strictest(level_access(plate_origin(config, p), level, day) for p in plates)


def allowed_on(access: str, remote_access: str) -> bool:
    """Whether data of ``access`` may be placed where ``remote_access`` readers can read it:
    only public data on public remotes."""
    return remote_access == "private" or access == "public"


def embargo_note(origin: Mapping[str, Any], day: date) -> str:
    """The embargo as words: ``until 2027-06-01, then public``, ``ended 2026-01-01``, or ''."""
    until = origin.get("embargo_until")
    if until is None:
        return ""
    if day >= parse_day(until):
        return f"ended {until}"
    return f"until {until}, then {origin['after_embargo']}"


def origin_record(config: Mapping[str, Any], plate: str | None) -> dict[str, Any]:
    """The origin a provenance record carries: the plate's, or for a job over every plate
    (the experiment tables) each plate's and their strictest access."""
    if plate is not None:
        return plate_origin(config, plate)
    plates = [p["name"] for p in config["plates"]]
    return {
        "plates": {p: plate_origin(config, p) for p in plates},
        "access": data_access(config, plates, "profiles"),
    }
