# Config validation and every helper the rules use (no lambdas in rules).
import re
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

# Jobs import the package from this checkout, whatever environment runs them (venv or
# --sdm conda), so the code that made an output is the code of this workflow's commit.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

from cellstrata.cellprofiler import CellProfilerError, source_files
from cellstrata.config import (
    CELLPROFILER_BATCH,
    CELLPROFILER_VERSION,
    PROFILE_STEPS,
    SCHEMA_PATH,
    channel_names,
    check_config,
    embedding_enabled,
    is_cellprofiler_plate,
    retention_of,
    segmentation_versions,
)
from cellstrata.ingest import IngestError, plate_inventory
from cellstrata.provenance import recorded_batches
from cellstrata.segment import cellpose_model_files
from cellstrata.stewardship import check_retention
from cellstrata.workflow import export_source

export_source(SRC)


validate(config, str(SCHEMA_PATH))
check_config(config)

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
for name, plate in IMAGE_PLATES.items():
    if not (IMAGES["Metadata_Plate"] == name).any() and not recorded_batches("results", name):
        raise IngestError(f"plate {name}: image root {plate['images']} is not a directory")
for name, plate in CELLPROFILER_PLATES.items():
    if not Path(plate["cellprofiler"]).exists() and not recorded_batches("results", name):
        raise CellProfilerError(
            f"plate {name}: CellProfiler output {plate['cellprofiler']} does not exist"
        )
# Never let temp() silently remove what an earlier retention kept.
check_retention(config)


wildcard_constraints:
    plate="|".join(re.escape(name) for name in PLATES),
    channel="|".join(re.escape(name) for name in CHANNELS),
    batch=r"[A-Z]{1,2}\d{2,3}(-[A-Z]{1,2}\d{2,3})?",
    seg="|".join(re.escape(name) for name in [*SEGMENTATIONS, CELLPROFILER_VERSION]),


def retained(level, path):
    """Wrap an output path in temp() when the level's retention is delete."""
    return temp(path) if retention_of(config["retention"], level) == "delete" else path


def plate_images(wildcards):
    return list(IMAGES.loc[IMAGES["Metadata_Plate"] == wildcards.plate, "path"])


def channel_images(wildcards):
    rows = (IMAGES["Metadata_Plate"] == wildcards.plate) & (IMAGES["channel"] == wildcards.channel)
    return list(IMAGES.loc[rows, "path"])


def batch_images(wildcards):
    rows = (IMAGES["Metadata_Plate"] == wildcards.plate) & (IMAGES["batch"] == wildcards.batch)
    return list(IMAGES.loc[rows, "path"])


def batches_of(plate):
    if plate in CELLPROFILER_PLATES:
        return [CELLPROFILER_BATCH]
    batches = IMAGES.loc[IMAGES["Metadata_Plate"] == plate, "batch"].unique()
    # No images and no manifest: the batches the provenance records know.
    return sorted(batches) if len(batches) else recorded_batches("results", plate)


def plate_root(wildcards):
    return PLATES[wildcards.plate]["images"]


def platemap_of(wildcards):
    return PLATES[wildcards.plate]["platemap"]


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
    records = []
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
    return profile_files() + crop_files() + ["results/summary.txt", "results/provenance.parquet"]


def image_pattern(wildcards):
    # Through a function: a literal regex like \d{2} would be read as a {wildcard}.
    return config["images"]["pattern"]
