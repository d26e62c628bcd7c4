# Config validation and every helper the rules use (no lambdas in rules).
import functools
import re
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

# Jobs import the package from this checkout, whatever environment runs them (venv or
# --sdm conda), so the code that made an output is the code of this workflow's commit.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

from cellstrata.singlecell.cellprofiler import CellProfilerError, source_files
from cellstrata.workflow.cluster import check_profile_environment, gpu_gres
from cellstrata.config import (CELLPROFILER_BATCH, CELLPROFILER_VERSION, PROFILE_STEPS, SCHEMA_PATH, channel_names, embedding_enabled, experiment_versions, is_cellprofiler_plate, retention_of, segmentation_versions, version_plates,)
from cellstrata.workflow.validate import (check_config,)
from cellstrata.images.ingest import IngestError, image_signature, plate_inventory
from cellstrata.profiles.experiment import EXPERIMENT_STEPS
from cellstrata.profiles.platemap import check_platemaps
from cellstrata.stewardship.provenance import recorded_batches
from cellstrata.profiles.quality import QUALITY_TABLES
from cellstrata.segment import cellpose_model_files
from cellstrata.stewardship.ownership import (check_ownership,)
from cellstrata.stewardship.retention import (check_retention,)
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


validate(config, str(SCHEMA_PATH))
check_config(config)
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
CELLPROFILER_PLATE_NAMES = "|".join(re.escape(name) for name in CELLPROFILER_PLATES)
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
            manifest=f"results/manifest/{name}.parquet",
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


def plate_image_signature(wildcards):
    """Names, sizes and times of a plate's images as one digest (rule ingest's params)."""
    return image_signature(plate_images(wildcards))


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


def platemap_of(wildcards):
    return PLATES[wildcards.plate]["platemap"]


def manifest_of(wildcards):
    """The image manifest of an image plate (which wells were imaged, so that a well without
    cells is reported as such); none for a CellProfiler plate."""
    if wildcards.plate in CELLPROFILER_PLATES:
        return []
    return [f"results/manifest/{wildcards.plate}.parquet"]


def illumination_functions(wildcards):
    return {
        channel: f"results/illumination/{wildcards.plate}/{channel}.tiff" for channel in CHANNELS
    }


def batch_features(wildcards):
    return expand(
        "results/features/{seg}/{plate}/{batch}.parquet",
        seg=wildcards.seg,
        plate=wildcards.plate,
        batch=batches_of(wildcards.plate),
    )


def batch_embeddings(wildcards):
    """The embedding tables the profiles of a version join to its features; none when
    features.embedding is off or for CellProfiler plates (they have no crops)."""
    if not embedding_enabled(config) or wildcards.plate in CELLPROFILER_PLATES:
        return []
    return expand(
        "results/embeddings/{seg}/{plate}/{batch}.parquet",
        seg=wildcards.seg,
        plate=wildcards.plate,
        batch=batches_of(wildcards.plate),
    )


def embedding_model(wildcards):
    """The model file of the embed rule: an input, so a new model re-runs the jobs and the
    provenance record holds its MD5."""
    return config["features"]["embedding"]["model"]


def embedding_gpus(wildcards):
    """GPUs an embed job asks for: 1 with features.embedding.device cuda, else 0."""
    return int(config["features"]["embedding"]["device"] == "cuda")


def embedding_gres(wildcards):
    """The same request as Slurm GRES (profiles/slurm sends it as --gres; empty: none)."""
    return gpu_gres(embedding_gpus(wildcards))


def segmentation_of(wildcards):
    return SEGMENTATIONS[wildcards.seg]


def segmentation_models(wildcards):
    """Model files of a cellpose version: inputs, so new weights at the same path re-run the
    job and its provenance record holds their MD5. Built-in models are no files here."""
    return cellpose_model_files(SEGMENTATIONS[wildcards.seg].get("cellpose"))


def segmentation_gpus(wildcards):
    """GPUs a segment job asks for: 1 for a cellpose version with gpu on, else 0."""
    params = SEGMENTATIONS[wildcards.seg]
    return int(params["method"] == "cellpose" and params["cellpose"]["gpu"])


def segmentation_gres(wildcards):
    """The same request as Slurm GRES (profiles/slurm sends it as --gres; empty: none)."""
    return gpu_gres(segmentation_gpus(wildcards))


def versions_of(plate):
    """Feature versions of a plate: the segmentation versions, or CellProfiler's one."""
    return [CELLPROFILER_VERSION] if plate in CELLPROFILER_PLATES else list(SEGMENTATIONS)


def profile_files():
    return [
        f"results/profiles/{seg}/{plate}/{plate}_{step}.parquet"
        for plate in PLATES
        for seg in versions_of(plate)
        for step in PROFILE_STEPS
    ]


def _version_tables(seg, name):
    return [
        f"results/profiles/{seg}/{plate}/{plate}_{name}.parquet"
        for plate in version_plates(config, seg)
    ]


def version_normalized(wildcards):
    """The normalized profiles of every plate of a version (stacked by rule experiment)."""
    return _version_tables(wildcards.seg, "normalized")


def version_annotated(wildcards):
    return _version_tables(wildcards.seg, "annotated")


def version_cell_qc(wildcards):
    return _version_tables(wildcards.seg, "cell_qc")


EXPERIMENT_VERSIONS = experiment_versions(config)


def experiment_files(tables=(*EXPERIMENT_STEPS, *QUALITY_TABLES)):
    """Experiment-level tables of every version: stacked profiles, consensus, quality."""
    return expand("results/experiment/{seg}/{table}.parquet", seg=EXPERIMENT_VERSIONS, table=tables)


def csv_files():
    """Gzipped CSV copies of the profile tables (plates and experiment), when profiles.csv
    asks for them."""
    if not config["profiles"]["csv"]:
        return []
    tables = profile_files() + experiment_files(EXPERIMENT_STEPS)
    return [path.removesuffix(".parquet") + ".csv.gz" for path in tables]


# The options of the per-plate profile chain (build_profiles); the rest of the profiles
# block is about the experiment level and the CSV copies.
PLATE_PROFILE_OPTIONS = {
    key: value
    for key, value in config["profiles"].items()
    if key not in ("consensus_operation", "csv")
}
# The readout of Z' and of the figures, or None when quality.readout names no feature.
READOUT = config["quality"]["readout"] if config["quality"]["readout"]["feature"] else None


# Cached: three input/params functions of each overlays job ask for the same rows.
@functools.cache
def _overlay_rows(plate):
    """Nuclei-channel images of report.overlay_sites sites spread evenly over the plate."""
    rows = IMAGES[
        (IMAGES["Metadata_Plate"] == plate)
        & (IMAGES["channel"] == config["segmentation"]["nuclei_channel"])
    ].sort_values(["Metadata_Well", "Metadata_Site"])
    count = min(config["report"]["overlay_sites"], len(rows))
    picks = sorted({round(i * (len(rows) - 1) / max(count - 1, 1)) for i in range(count)})
    return rows.iloc[picks]


def overlay_images(wildcards):
    return list(_overlay_rows(wildcards.plate)["path"])


def overlay_mask_batches(wildcards):
    batches = _overlay_rows(wildcards.plate)["batch"].unique()
    return [f"results/masks/{wildcards.seg}/{wildcards.plate}/{batch}" for batch in batches]


def overlay_sites(wildcards):
    """The sites of the overlay figure: title, raw nuclei image, nuclei and cell masks."""
    sites = []
    for row in _overlay_rows(wildcards.plate).itertuples():
        masks = f"results/masks/{wildcards.seg}/{wildcards.plate}/{row.batch}"
        stem = f"{row.Metadata_Well}_s{row.Metadata_Site}"
        sites.append(
            {
                "title": f"{row.Metadata_Well} site {row.Metadata_Site}",
                "image": row.path,
                "nuclei": f"{masks}/{stem}_nuclei.tiff",
                "cells": f"{masks}/{stem}_cells.tiff",
            }
        )
    return sites


def pca_colour(wildcards):
    """report.color_by, else the first treatment column, else the control type."""
    chosen = config["report"]["color_by"] or next(
        iter(config["platemap"]["treatment_columns"]), "control_type"
    )
    return chosen


def figure_files():
    files = expand(
        "results/figures/{seg}/{figure}.png",
        seg=EXPERIMENT_VERSIONS,
        figure=["pca", "map", "dose_response"],
    )
    for plate in PLATES:
        files += expand(
            "results/figures/{seg}/{plate}/overview.png", seg=versions_of(plate), plate=plate
        )
    for plate in IMAGE_PLATES:
        files += [
            f"results/figures/{plate}/illumination.png",
            f"results/figures/{plate}/image_qc.png",
        ]
        files += expand(
            "results/figures/{seg}/{plate}/overlays.png", seg=SEGMENTATIONS, plate=plate
        )
    return files


def manifest_files():
    return expand("results/manifest/{plate}.parquet", plate=list(IMAGE_PLATES))


def cellprofiler_feature_files():
    return expand(
        "results/features/{seg}/{plate}/{batch}.parquet",
        seg=CELLPROFILER_VERSION,
        plate=list(CELLPROFILER_PLATES),
        batch=CELLPROFILER_BATCH,
    )


def cellprofiler_source(wildcards):
    return CELLPROFILER_PLATES[wildcards.plate]["cellprofiler"]


def cellprofiler_inputs(wildcards):
    """The CellProfiler files a conversion reads; none when the output is absent and only
    results were pulled (the features it made stand in, as manifests do for images)."""
    source = cellprofiler_source(wildcards)
    return source_files(source) if Path(source).exists() else []


def cellprofiler_plate_of(wildcards):
    return CELLPROFILER_PLATES[wildcards.plate].get("cellprofiler_plate")


def provenance_records():
    records = expand(
        "results/provenance/experiment/{seg}/{job}.json",
        seg=EXPERIMENT_VERSIONS,
        job=["experiment", "quality"],
    )
    for plate in CELLPROFILER_PLATES:
        records += [
            f"results/provenance/{plate}/features/{CELLPROFILER_VERSION}/{CELLPROFILER_BATCH}.json",
            f"results/provenance/{plate}/profiles/{CELLPROFILER_VERSION}.json",
        ]
    for plate in IMAGE_PLATES:
        records.append(f"results/provenance/{plate}/ingest.json")
        records.append(f"results/provenance/{plate}/qc.json")
        records += expand(
            "results/provenance/{plate}/profiles/{seg}.json",
            plate=plate,
            seg=SEGMENTATIONS,
        )
        records += expand(
            "results/provenance/{plate}/illumination/{channel}.json",
            plate=plate,
            channel=CHANNELS,
        )
        records += expand(
            "results/provenance/{plate}/correct/{batch}.json",
            plate=plate,
            batch=batches_of(plate),
        )
        steps = ["segment", "features"] + (["crops"] if config["crops"]["enabled"] else [])
        steps += ["embed"] if embedding_enabled(config) else []
        records += expand(
            "results/provenance/{plate}/{step}/{seg}/{batch}.json",
            plate=plate,
            step=steps,
            seg=SEGMENTATIONS,
            batch=batches_of(plate),
        )
    return records


def crop_files():
    if not config["crops"]["enabled"]:
        return []
    return [
        f"results/crops/{seg}/{plate}/{batch}.{ext}"
        for seg in SEGMENTATIONS
        for plate in IMAGE_PLATES
        for batch in batches_of(plate)
        for ext in ("h5", "parquet")
    ]


def final_outputs():
    # Enabled crops are targets: their one consumer, rule embed, runs only with a model.
    return (
        profile_files()
        + experiment_files()
        + csv_files()
        + figure_files()
        + crop_files()
        + ["results/summary.txt", "results/provenance.parquet"]
    )


def image_pattern(wildcards):
    # Through a function: a literal regex like \d{2} would be read as a {wildcard}.
    return config["images"]["pattern"]


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
