"""Snakemake script: image QC of one plate (metrics and outlier flags per site and channel)."""

from cellstrata.images.qc import qc_plate
from cellstrata.stewardship.provenance import recorded_job

with recorded_job(snakemake):
    qc_plate(
        snakemake.input.manifest,
        snakemake.output[0],
        thresholds=snakemake.params.thresholds,
    )
