"""Snakemake script: single-cell embeddings of one batch's crops."""

from cellstrata.embed import embed_batch
from cellstrata.provenance import recorded_job

with recorded_job(snakemake):
    embed_batch(
        snakemake.input.store,
        snakemake.input.index,
        snakemake.input.model,
        snakemake.output[0],
        threads=snakemake.threads,
        **dict(snakemake.params.items()),
    )
