# The input and params functions of plots.smk's rules.
import functools


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
    return [
        output_of("segment").format(seg=wildcards.seg, plate=wildcards.plate, batch=batch)
        for batch in batches
    ]


def overlay_sites(wildcards):
    """The sites of the overlay figure: title, raw nuclei image, nuclei and cell masks."""
    sites = []
    for row in _overlay_rows(wildcards.plate).itertuples():
        masks = output_of("segment").format(
            seg=wildcards.seg, plate=wildcards.plate, batch=row.batch
        )
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

# Figures of the Snakemake HTML report (`snakemake --report results/report.html`).
