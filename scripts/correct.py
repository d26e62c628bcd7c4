"""Snakemake script: illumination-correct the sites of one batch."""

from cellstrata.illumination import correct_plate_batch
from cellstrata.logs import logged

with logged(snakemake.log[0]):
    correct_plate_batch(
        snakemake.input.manifest,
        snakemake.wildcards.batch,
        {channel: snakemake.input[channel] for channel in snakemake.params.channels},
        snakemake.output[0],
    )
