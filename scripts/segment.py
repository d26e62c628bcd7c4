"""Snakemake script: nuclei, cell and cytoplasm masks of one batch."""

from cellstrata.provenance import recorded_job
from cellstrata.segment import segment_batch

with recorded_job(snakemake):
    segment_batch(
        snakemake.input[0],
        snakemake.output[0],
        **snakemake.params.segmentation,
    )
