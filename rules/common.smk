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

from cellstrata.config import (
    PROFILE_STEPS,
    SCHEMA_PATH,
    channel_names,
    check_config,
    retention_of,
    segmentation_versions,
)
from cellstrata.ingest import IngestError, plate_inventory
from cellstrata.provenance import recorded_batches
from cellstrata.stewardship import check_retention
from cellstrata.workflow import export_source

export_source(SRC)


validate(config, str(SCHEMA_PATH))
check_config(config)

PLATES = {plate["name"]: plate for plate in config["plates"]}
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
        for name, plate in PLATES.items()
    ],
    ignore_index=True,
)
for name, plate in PLATES.items():
    if not (IMAGES["Metadata_Plate"] == name).any() and not recorded_batches("results", name):
        raise IngestError(f"plate {name}: image root {plate['images']} is not a directory")
# Never let temp() silently remove what an earlier retention kept.
check_retention(config)


wildcard_constraints:
    plate="|".join(re.escape(name) for name in PLATES),
    channel="|".join(re.escape(name) for name in CHANNELS),
    batch=r"[A-Z]{1,2}\d{2,3}(-[A-Z]{1,2}\d{2,3})?",
    seg="|".join(re.escape(name) for name in SEGMENTATIONS),


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


def segmentation_of(wildcards):
    return SEGMENTATIONS[wildcards.seg]


def profile_files():
    return expand(
        "results/profiles/{seg}/{plate}/{plate}_{step}.parquet",
        seg=list(SEGMENTATIONS),
        plate=list(PLATES),
        step=PROFILE_STEPS,
    )


def provenance_records():
    records = []
    for plate in PLATES:
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
        for plate in PLATES
        for batch in batches_of(plate)
        for ext in ("h5", "parquet")
    ]


def final_outputs():
    # Crops have no consumer yet (embeddings come later), so when enabled they are targets.
    return profile_files() + crop_files() + ["results/summary.txt", "results/provenance.parquet"]


def image_pattern(wildcards):
    # Through a function: a literal regex like \d{2} would be read as a {wildcard}.
    return config["images"]["pattern"]
