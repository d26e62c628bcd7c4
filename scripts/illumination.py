"""Snakemake script: illumination function of one plate x channel."""

from cellstrata.images.illumination import write_illumination
from cellstrata.stewardship.provenance import recorded_job

with recorded_job(snakemake):
    write_illumination(
        snakemake.input.manifest,
        snakemake.wildcards.channel,
        snakemake.output[0],
        **snakemake.params.illumination,
    )
