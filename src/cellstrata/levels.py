"""The data levels, declared once: what each level is, which rules make it and where it lies.

Everything that needs to know a level derives it from :data:`LEVEL_DECLARATIONS`: the
target lists and provenance record list of the rules (rules/common.smk), ``cellstrata
status``, the storage plan, ``dvc.yaml`` generation, retention checks, stale detection and
the summary. The rules keep their literal output paths (Snakemake style); a test checks
they are the patterns declared here. A level's default retention and size ratio are the
defaults of the configuration schema (``retention.levels.*``, ``storage.size_ratios``),
which are written there once, beside their descriptions.

This module reads constants and readers of :mod:`cellstrata.config` only.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cellstrata.config import (
    CELLPROFILER_BATCH,
    CELLPROFILER_VERSION,
    PROFILE_REPORTS,
    PROFILE_STEPS,
    ConfigError,
    embedding_enabled,
    is_cellprofiler_plate,
    schema_default,
)
from cellstrata.segment.versions import segmentation_versions

#: Every job's provenance record (JSON), under a folder per plate or the experiment.
PROVENANCE_ROOT = "results/provenance"
#: Provenance records of a plate (tombstones included): always kept.
PROVENANCE_PATH = f"{PROVENANCE_ROOT}/{{plate}}"
#: Provenance records of the experiment-level jobs: always kept.
EXPERIMENT_PROVENANCE_PATH = f"{PROVENANCE_ROOT}/experiment"
#: One record per version retired with ``cellstrata retire`` (YAML, so that they are never
#: taken for job records): the versions the workspace no longer keeps, and the remote objects
#: that still hold their data.
RETIRED_PATH = f"{PROVENANCE_ROOT}/retired"
#: One record per output that ``cellstrata lifecycle`` moved (YAML, like the retired ones): its
#: step of the level's schedule, the remote holding it now, and every move it made.
LIFECYCLE_PATH = f"{PROVENANCE_ROOT}/lifecycle"
#: Where ``cellstrata clean-stale`` keeps the records of what it removed (one JSON per line):
#: out of the live records (``*.json``) that status, the DAG and the provenance table read.
STALE_LOG = f"{PROVENANCE_PATH}/stale.jsonl"
#: What a version makes across its plates (stacked profiles, consensus, quality tables):
#: stored with the profiles' retention.
EXPERIMENT_PATH = "results/experiment/{version}"
_EXPERIMENT_TABLE = "results/experiment/{{seg}}/{table}.parquet"


@dataclass(frozen=True)
class Job:
    """A rule making (part of) a level.

    Attributes
    ----------
    rule : str
        The Snakemake rule name.
    outputs : Mapping[str | None, str]
        Its output patterns by output name (None: the one unnamed output), in the rule's
        wildcards (``{plate}``, ``{seg}``, ``{batch}``, ``{channel}``).
    provenance : str
        The pattern of its provenance record.
    plates : str
        Which jobs exist: per ``image`` plate, per ``cellprofiler`` plate, per plate of
        ``all`` kinds, or per version of the ``experiment``.
    """

    rule: str
    outputs: Mapping[str | None, str]
    provenance: str
    plates: str = "image"


@dataclass(frozen=True)
class Level:
    """One data level.

    Attributes
    ----------
    name : str
        The level's name, as in ``retention.levels``.
    scope : str
        What one job of the level covers: plate, plate x channel, batch, version (per
        plate) or experiment.
    path : str or None
        Where a level keeps one plate's outputs: one directory (or file) per plate, which is
        also the unit DVC tracks (few entries per plate, never one per site). Levels
        downstream of segmentation carry its ``{version}`` (``<method>-<paramhash>``). None
        for the raw images, which stay under their image roots.
    jobs : tuple of Job
        The rules that make it.
    cellprofiler : bool
        Whether CellProfiler plates have it (they enter the chain at the features level).
    """

    name: str
    scope: str
    path: str | None
    jobs: tuple[Job, ...] = field(default=())
    cellprofiler: bool = False

    @property
    def versioned(self) -> bool:
        """Whether the level carries a segmentation version."""
        return self.path is not None and "{version}" in self.path

    @property
    def retention(self) -> str | None:
        """Default retention (None: ``retention.default``), from the schema."""
        return schema_default("retention", "levels", self.name)

    @property
    def size_ratio(self) -> float | None:
        """Expected size relative to the raw images, from the schema (None for raw)."""
        return schema_default("storage", "size_ratios").get(self.name)


def _tables(root: str, names: Iterable[str]) -> dict[str, str]:
    return {name: root.format(table=name) for name in names}


LEVEL_DECLARATIONS = (
    Level("raw", "plate", None),
    Level(
        "manifest",
        "plate",
        "results/manifest/{plate}.parquet",
        (
            Job(
                "ingest",
                {None: "results/manifest/{plate}.parquet"},
                f"{PROVENANCE_PATH}/ingest.json",
            ),
        ),
    ),
    Level(
        "qc",
        "plate",
        "results/qc/{plate}.parquet",
        (Job("qc", {None: "results/qc/{plate}.parquet"}, f"{PROVENANCE_PATH}/qc.json"),),
    ),
    Level(
        "illumination",
        "plate x channel",
        "results/illumination/{plate}",
        (
            Job(
                "illumination",
                {None: "results/illumination/{plate}/{channel}.tiff"},
                f"{PROVENANCE_PATH}/illumination/{{channel}}.json",
            ),
        ),
    ),
    Level(
        "corrected",
        "batch",
        "results/corrected/{plate}",
        (
            Job(
                "correct",
                {None: "results/corrected/{plate}/{batch}"},
                f"{PROVENANCE_PATH}/correct/{{batch}}.json",
            ),
        ),
    ),
    Level(
        "masks",
        "batch",
        "results/masks/{version}/{plate}",
        (
            Job(
                "segment",
                {None: "results/masks/{seg}/{plate}/{batch}"},
                f"{PROVENANCE_PATH}/segment/{{seg}}/{{batch}}.json",
            ),
        ),
    ),
    Level(
        "crops",
        "batch",
        "results/crops/{version}/{plate}",
        (
            Job(
                "crops",
                {
                    "store": "results/crops/{seg}/{plate}/{batch}.h5",
                    "index": "results/crops/{seg}/{plate}/{batch}.parquet",
                },
                f"{PROVENANCE_PATH}/crops/{{seg}}/{{batch}}.json",
            ),
        ),
    ),
    Level(
        "embeddings",
        "batch",
        "results/embeddings/{version}/{plate}",
        (
            Job(
                "embed",
                {None: "results/embeddings/{seg}/{plate}/{batch}.parquet"},
                f"{PROVENANCE_PATH}/embed/{{seg}}/{{batch}}.json",
            ),
        ),
    ),
    Level(
        "features",
        "batch",
        "results/features/{version}/{plate}",
        (
            Job(
                "features",
                {None: "results/features/{seg}/{plate}/{batch}.parquet"},
                f"{PROVENANCE_PATH}/features/{{seg}}/{{batch}}.json",
            ),
            Job(
                "cellprofiler_features",
                {None: f"results/features/{{seg}}/{{plate}}/{CELLPROFILER_BATCH}.parquet"},
                f"{PROVENANCE_PATH}/features/{{seg}}/{CELLPROFILER_BATCH}.json",
                plates="cellprofiler",
            ),
        ),
        cellprofiler=True,
    ),
    Level(
        "profiles",
        "version",
        "results/profiles/{version}/{plate}",
        (
            Job(
                "profiles",
                _tables(
                    "results/profiles/{{seg}}/{{plate}}/{{plate}}_{table}.parquet",
                    PROFILE_STEPS + PROFILE_REPORTS,
                ),
                f"{PROVENANCE_PATH}/profiles/{{seg}}.json",
                plates="all",
            ),
            # The experiment tables stay under the profiles' retention.
            Job(
                "experiment",
                _tables(_EXPERIMENT_TABLE, ("normalized", "feature_selected", "consensus")),
                f"{EXPERIMENT_PROVENANCE_PATH}/{{seg}}/experiment.json",
                plates="experiment",
            ),
            Job(
                "quality",
                _tables(_EXPERIMENT_TABLE, ("map", "zprime", "cell_counts")),
                f"{EXPERIMENT_PROVENANCE_PATH}/{{seg}}/quality.json",
                plates="experiment",
            ),
        ),
        cellprofiler=True,
    ),
)

#: The data levels in chain order.
LEVELS = tuple(level.name for level in LEVEL_DECLARATIONS)
#: The level each rule's outputs belong to.
RULE_LEVELS = {job.rule: level.name for level in LEVEL_DECLARATIONS for job in level.jobs}
#: The jobs by rule name.
JOBS = {job.rule: job for level in LEVEL_DECLARATIONS for job in level.jobs}
#: Where a level keeps one plate's outputs (:attr:`Level.path`), for the levels the workflow makes.
LEVEL_PATHS = {level.name: level.path for level in LEVEL_DECLARATIONS if level.path}
VERSIONED_LEVELS = tuple(level.name for level in LEVEL_DECLARATIONS if level.versioned)
#: The levels a CellProfiler plate has (CellProfiler made the image levels, outside this workflow).
CELLPROFILER_LEVELS = tuple(level.name for level in LEVEL_DECLARATIONS if level.cellprofiler)
#: Levels made one job per batch: a file or a directory per batch in the plate directory.
BATCH_LEVELS = tuple(level.name for level in LEVEL_DECLARATIONS if level.scope == "batch")


def output_of(rule: str, name: str | None = None) -> str:
    """The output pattern ``name`` (None: the one unnamed output) of a level's rule."""
    return JOBS[rule].outputs[name]


def expand_pattern(pattern: str, **values: Iterable[Any]) -> list[str]:
    """``pattern`` formatted with every combination of the values of the fields it names
    (fields it does not name are ignored), in the order of ``values``."""
    fields = [name for _, name, _, _ in string.Formatter().parse(pattern) if name]
    names = [name for name in values if name in fields]
    return [
        pattern.format(**dict(zip(names, combination, strict=True)))
        for combination in itertools.product(*(values[name] for name in names))
    ]


def level_path(level: str, plate: str, version: str | None = None) -> str:
    """Path of one plate's outputs of a level (a directory, or the manifest file)."""
    if level in VERSIONED_LEVELS and version is None:
        raise ConfigError(f"level {level} needs a segmentation version")
    return LEVEL_PATHS[level].format(plate=plate, version=version)


def level_versions(config: dict[str, Any], level: str) -> list[str | None]:
    """The versions a level exists in: segmentation versions, or ``[None]`` if unversioned."""
    return list(segmentation_versions(config)) if level in VERSIONED_LEVELS else [None]


def plate_level_versions(config: dict[str, Any], plate: str, level: str) -> list[str | None]:
    """The versions a level exists in for one plate (:func:`level_versions` for image plates).

    A CellProfiler plate has only the levels of :data:`CELLPROFILER_LEVELS`, in the version
    :data:`~cellstrata.config.CELLPROFILER_VERSION`; every other level is empty (``[]``).
    """
    entry = next(p for p in config["plates"] if p["name"] == plate)
    if is_cellprofiler_plate(entry):
        return [CELLPROFILER_VERSION] if level in CELLPROFILER_LEVELS else []
    if level == "embeddings" and not embedding_enabled(config):
        return []
    return level_versions(config, level)


def retention_of(retention: dict[str, Any], level: str, plate: str | None = None) -> str:
    """Retention (keep, archive or delete) of a level, optionally for one plate; a level
    with a lifecycle schedule gives the schedule (a list of steps, never ``delete``, so
    never ``temp()``). :func:`retention_kind` gives the schedule's current first step.

    Parameters
    ----------
    retention : dict
        The validated ``retention`` block of the configuration.
    level : str
        One of :data:`LEVELS`.
    plate : str, optional
        Apply the plate's override, if any.
    """
    if level not in LEVELS:
        raise ConfigError(f"unknown level {level!r}; levels are {LEVELS}")
    override = retention.get("plates", {}).get(plate, {}).get(level) if plate else None
    return override or retention["levels"].get(level) or retention["default"]


def retention_kind(retention: dict[str, Any], level: str, plate: str | None = None) -> str:
    """:func:`retention_of` as keep, archive or delete: a schedule's first step (``keep`` or
    ``archive``), which holds until ``cellstrata lifecycle`` moves the data on."""
    action = retention_of(retention, level, plate)
    if isinstance(action, list):
        return "keep" if "keep" in action[0] else "archive"
    return action
