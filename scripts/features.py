"""Snakemake script: single-cell features of one batch."""

from cellstrata.singlecell.features import measure_batch
from cellstrata.stewardship.provenance import recorded_job

with recorded_job(snakemake):
    measure_batch(
        snakemake.input.corrected,
        snakemake.input.masks,
        snakemake.wildcards.plate,
        snakemake.output[0],
        groups=snakemake.params.groups,
        options=snakemake.params.options,
    )
