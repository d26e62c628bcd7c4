"""The reliability suite's failpoint: a job fails, or pauses until killed, right after writing
its outputs and its provenance record, when ``CELLSTRATA_FAULT`` asks for it.

Only tests/reliability sets the variable; in every real run it is unset and :func:`failpoint`
costs one environment lookup. Called by
:func:`cellstrata.stewardship.provenance.recorded_job`, the one place every job ends.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

#: Comma-separated ``<rule>[/<wildcard value>...]:<point>`` entries, e.g.
#: ``features/A01-A06:after-write``. A job of ``<rule>`` whose wildcards include every listed
#: value, once its outputs and its record are written under their final names, then
#: ``after-write``: fails (:class:`InjectedFault`), so Snakemake must remove outputs that are
#: complete; ``pause-after-write``: logs that it paused and sleeps until it is killed (failing
#: after 10 minutes), so a test can kill a run whose job has finished writing but not ended.
FAULT_VARIABLE = "CELLSTRATA_FAULT"
FAULT_POINTS = ("after-write", "pause-after-write")


class InjectedFault(RuntimeError):
    """The failure that ``CELLSTRATA_FAULT`` asked of a job."""


def injected_fault(rule: str, wildcards: Mapping[str, str], spec: str | None = None) -> str | None:
    """The point of the first ``CELLSTRATA_FAULT`` entry (or ``spec``) matching a job of
    ``rule`` with ``wildcards``; None when none does. A malformed entry raises ValueError,
    so a mistyped fault fails loudly instead of silently not firing."""
    spec = os.environ.get(FAULT_VARIABLE, "") if spec is None else spec
    values = set(wildcards.values())
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        target, _, point = entry.rpartition(":")
        if not target or point not in FAULT_POINTS:
            raise ValueError(
                f"{FAULT_VARIABLE} entry {entry!r}: expected <rule>[/<wildcard value>...]:<point>"
                f" with a point of {', '.join(FAULT_POINTS)}"
            )
        name, *wanted = target.split("/")
        if name == rule and values.issuperset(wanted):
            return point
    return None


def failpoint(rule: str, wildcards: Mapping[str, str], logger: logging.Logger) -> None:
    """Fail or pause the job of ``rule`` with ``wildcards`` if ``CELLSTRATA_FAULT`` asks for it;
    nothing (beyond reading the variable) when it is unset."""
    spec = os.environ.get(FAULT_VARIABLE)
    if not spec:
        return
    point = injected_fault(rule, dict(wildcards.items()), spec)
    if point is None:
        return
    if point == "pause-after-write":
        logger.warning("%s: paused after writing the outputs, until killed", FAULT_VARIABLE)
        time.sleep(600)
    raise InjectedFault(f"{FAULT_VARIABLE}: {point} fault injected after writing the outputs")
