"""Snakemake script: single-cell features of one batch."""

from cellstrata.features import measure_batch
from cellstrata.logs import logged

with logged(snakemake.log[0]):
    measure_batch(
        snakemake.input.corrected,
        snakemake.input.masks,
        snakemake.wildcards.plate,
        snakemake.output[0],
    )
