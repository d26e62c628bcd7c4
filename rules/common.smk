# Needed by every rule of the workflow. Config validation, the image inventory, generic helpers
# (no lambdas in rules). A rule's own input and params functions live in rules/inputs/<its
# file>.smk (Snakemake's linter wants rules and functions apart); the paths of
# the levels come from cellstrata.levels.
import re
import sys
from pathlib import Path

import pandas as pd

# Jobs import the package from this checkout, whatever environment runs them (venv or
# --sdm conda), so the code that made an output is the code of this workflow's commit.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

from cellstrata.singlecell.cellprofiler import CellProfilerError
from cellstrata.workflow.cluster import check_profile_environment, gpu_gres
from cellstrata.config import (
    CELLPROFILER_BATCH,
    CELLPROFILER_VERSION,
    channel_names,
    embedding_enabled,
    is_cellprofiler_plate,
    version_plates,
)
from cellstrata.segment.versions import experiment_versions, segmentation_versions
from cellstrata.levels import level_path, output_of, retention_of
from cellstrata.workflow.validate import validate_config
from cellstrata.images.ingest import IngestError, plate_inventory
from cellstrata.profiles.platemap import check_platemaps
from cellstrata.stewardship.provenance import recorded_batches
from cellstrata.stewardship.ownership import check_ownership
from cellstrata.stewardship.retention import check_retention
from cellstrata.workflow.digests import CodeDigests, export_source

export_source(SRC)

# Snakemake's code trigger sees a rule's script file, not the package code the script calls:
# an edit of src/cellstrata/singlecell/features.py would leave every features output stale without a
# word. Each rule's `params: code=code_of(<script>)` is a digest of the package modules its
# script can reach (cellstrata.workflow.digests.code_files), so Snakemake's params trigger re-runs
# exactly the rules whose code changed (features.py: features and what uses its tables; report/:
# the figures, never segmentation). Made once per parse of the Snakefile, on first use.
CODE_DIGESTS = CodeDigests(SRC)


def code_of(script):
    """The params function giving the code digest of a rule running ``scripts/<script>``."""
    path = Path(workflow.basedir) / "scripts" / script

    def code(wildcards):
        return CODE_DIGESTS(path)

    return code


validate_config(config)
# Never let a second experiment, or other images under a plate's name, overwrite what this
# workspace holds (first: before the image roots are scanned). In the planning process only,
# like check_retention below.
if not (workflow.remote_exec or workflow.subprocess_exec):
    check_ownership(config)
# A profile's `slurm_account: $SBATCH_ACCOUNT` with the variable unset: say so before submitting
# (on the submitting side only: inside a job the plugin's srun drops SBATCH_* variables).
if not (workflow.remote_exec or workflow.subprocess_exec):
    check_profile_environment(
        getattr(workflow.resource_settings.default_resources, "args", None) or []
    )

PLATES = {plate["name"]: plate for plate in config["plates"]}
# Plates given as CellProfiler output enter at the features level (rules/cellprofiler.smk); the
# image levels (manifest, qc, illumination, masks, crops) are for the image plates only.
CELLPROFILER_PLATES = {
    name: plate for name, plate in PLATES.items() if is_cellprofiler_plate(plate)
}
IMAGE_PLATES = {name: plate for name, plate in PLATES.items() if name not in CELLPROFILER_PLATES}
CHANNELS = channel_names(config)
# Segmentation versions (<method>-<paramhash>) to build side by side, the main one first.
SEGMENTATIONS = segmentation_versions(config)
# File names only (no pixels) are read while the DAG is built; the ingest job checks contents.
# Without the image root (a collaborator who pulled results only) the manifest stands in.
IMAGES = pd.concat(
    [
        plate_inventory(
            name,
            plate["images"],
            config["images"]["pattern"],
            config["channels"],
            manifest=level_path("manifest", name),
            extensions=config["images"]["extensions"],
            wells_per_job=config["batching"]["wells_per_job"],
        )
        for name, plate in IMAGE_PLATES.items()
    ]
    # A config of CellProfiler plates only has no images at all.
    or [pd.DataFrame(columns=["Metadata_Plate", "channel", "path", "batch"])],
    ignore_index=True,
)


def _image_index(*columns):
    """Image paths of IMAGES grouped by the values of ``columns``, in IMAGES order."""
    index = {}
    keys = zip(*(IMAGES[column].tolist() for column in columns))
    for key, path in zip(keys, IMAGES["path"].tolist()):
        index.setdefault(key, []).append(path)
    return index


# Image lookups run once per job while the DAG is built (sites per job, batches): a boolean
# mask over every image of every plate per call made them the slowest part of our code at
# screen scale (960 correct jobs x 172,800 rows for 10 plates); dictionaries built once
# answer in O(1).
PLATE_IMAGES = _image_index("Metadata_Plate")
BATCH_IMAGES = _image_index("Metadata_Plate", "batch")


def _plate_batches():
    """Batches of each plate with images, sorted."""
    batches = {}
    for plate, batch in sorted(BATCH_IMAGES):
        batches.setdefault(plate, []).append(batch)
    return batches


PLATE_BATCHES = _plate_batches()


for name, plate in IMAGE_PLATES.items():
    if (name,) not in PLATE_IMAGES and not recorded_batches("results", name):
        raise IngestError(f"plate {name}: image root {plate['images']} is not a directory")
for name, plate in CELLPROFILER_PLATES.items():
    if not Path(plate["cellprofiler"]).exists() and not recorded_batches("results", name):
        raise CellProfilerError(
            f"plate {name}: CellProfiler output {plate['cellprofiler']} does not exist"
        )
# Never let temp() silently remove what an earlier retention kept. Checked by the Snakemake
# process that plans the run only: a cluster job re-reads this file while other jobs are still
# writing, and would take their unfinished outputs for unrecorded kept files.
if not (workflow.remote_exec or workflow.subprocess_exec):
    check_retention(config)
    # A bad platemap or control value found by the profiles job is found too late: Snakemake
    # has removed the outputs the job would replace. Read them now, as that job will.
    check_platemaps(config)


wildcard_constraints:
    plate="|".join(re.escape(name) for name in PLATES),
    channel="|".join(re.escape(name) for name in CHANNELS),
    batch=r"[A-Z]{1,2}\d{2,3}(-[A-Z]{1,2}\d{2,3})?",
    seg="|".join(re.escape(name) for name in [*SEGMENTATIONS, CELLPROFILER_VERSION]),
    # Only profile tables get CSV copies (profiles.csv).
    table=r"(profiles|experiment)/[^.]+",


def retained(level, path):
    """Wrap an output path in temp() when the level's retention is delete."""
    return temp(path) if retention_of(config["retention"], level) == "delete" else path


def plate_images(wildcards):
    return list(PLATE_IMAGES.get((wildcards.plate,), []))


def batch_images(wildcards):
    return list(BATCH_IMAGES.get((wildcards.plate, wildcards.batch), []))


def batches_of(plate):
    if plate in CELLPROFILER_PLATES:
        return [CELLPROFILER_BATCH]
    # No images and no manifest: the batches the provenance records know.
    return list(PLATE_BATCHES.get(plate, [])) or recorded_batches("results", plate)


def plate_root(wildcards):
    return PLATES[wildcards.plate]["images"]


def image_root(wildcards):
    """The image root as an input of the rules that read images, flagged ancient.

    Its own time changes with any file added to or removed from it (a notes.txt), which says
    nothing about the images: params.image_files of rule ingest does (added, removed or
    changed images re-run the plate). It stays an input so that a clone without the images (a
    collaborator who pulled results only) has no job that needs them: Snakemake drops such a
    job and the pulled outputs stand in.
    """
    return ancient(plate_root(wildcards))


def illumination_functions(wildcards):
    return {
        channel: output_of("illumination").format(plate=wildcards.plate, channel=channel)
        for channel in CHANNELS
    }


def _version_tables(seg, name):
    return [
        output_of("profiles", name).format(seg=seg, plate=plate)
        for plate in version_plates(config, seg)
    ]


def version_annotated(wildcards):
    return _version_tables(wildcards.seg, "annotated")


EXPERIMENT_VERSIONS = experiment_versions(config)


# The readout of Z' and of the figures, or None when quality.readout names no feature.
READOUT = config["quality"]["readout"] if config["quality"]["readout"]["feature"] else None


# Cluster resources of the rules, sized from benchmarks/rule_resources.py (real 1080x1080
# Cell Painting sites, 5 channels, about 40 cells per site; each rule's comment gives its
# script's measured peak). On a cluster a job also holds its own Snakemake process, which
# parses the workflow and the image inventory of every plate: about 410 MB for a 10-plate
# screen. mem_mb: 1.5 x (the script's peak + 410 MB), rounded up; every figure stays within
# threads x 3,750 MB, the memory per core of CU Alpine's amilan nodes (a job asking more is
# charged for more cores). runtime (minutes): a fixed part (start-up, queue noise) plus
# seconds per site x the sites of the job, about 3x the measured seconds (slower nodes,
# denser sites: feature time grows with the cells of a site). Both grow with the attempt, so
# a job killed for time or memory is retried larger (snakemake --retries).


def job_sites(wildcards):
    """Sites of a job: of its batch for image-level jobs, else of its plate (0 for plates
    without images)."""
    images = batch_images(wildcards) if hasattr(wildcards, "batch") else plate_images(wildcards)
    return len(images) // max(len(CHANNELS), 1)


def job_memory(mb):
    """The mem_mb resource: ``mb`` on the first attempt, ``mb`` x attempt on retries."""

    def mem_mb(wildcards, attempt):
        return int(mb * attempt)

    return mem_mb


def job_runtime(minutes, seconds_per_site=0):
    """The runtime resource in minutes: ``minutes`` plus ``seconds_per_site`` x the sites of
    the job (:func:`job_sites`), rounded up, x attempt."""

    def runtime(wildcards, attempt):
        sites = job_sites(wildcards) if seconds_per_site else 0
        # Integer ceiling of the per-site minutes.
        return int((minutes - (-seconds_per_site * sites // 60)) * attempt)

    return runtime
