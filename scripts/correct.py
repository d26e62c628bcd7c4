"""Snakemake script: illumination-correct the sites of one batch."""

from cellstrata.images.illumination import correct_plate_batch
from cellstrata.stewardship.provenance import recorded_job

with recorded_job(snakemake):
    correct_plate_batch(
        snakemake.input.manifest,
        snakemake.wildcards.batch,
        {channel: snakemake.input[channel] for channel in snakemake.params.channels},
        snakemake.output[0],
        qc_path=snakemake.input.qc,
        exclude=snakemake.params.exclude,
    )
