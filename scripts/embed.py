"""Snakemake script: single-cell embeddings of one batch's crops."""

from cellstrata.singlecell.embed import embed_batch
from cellstrata.stewardship.provenance import recorded_job

with recorded_job(snakemake):
    embed_batch(
        snakemake.input.store,
        snakemake.input.index,
        snakemake.input.model,
        snakemake.output[0],
        threads=snakemake.threads,
        format=snakemake.params.format,
        device=snakemake.params.device,
        batch_size=snakemake.params.batch_size,
        channels=snakemake.params.channels,
        normalize=snakemake.params.normalize,
        prefix=snakemake.params.prefix,
    )
