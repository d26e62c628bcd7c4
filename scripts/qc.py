"""Snakemake script: image QC of one plate (metrics and outlier flags per site and channel)."""

from cellstrata.provenance import recorded_job
from cellstrata.qc import qc_plate

with recorded_job(snakemake):
    qc_plate(
        snakemake.input.manifest,
        snakemake.output[0],
        thresholds=snakemake.params.thresholds,
    )
