"""Snakemake script: nuclei, cell and cytoplasm masks of one batch."""

from cellstrata.segment.batch import segment_batch
from cellstrata.stewardship.provenance import recorded_job

with recorded_job(snakemake):
    segment_batch(
        snakemake.input[0],
        snakemake.output[0],
        **snakemake.params.segmentation,
    )
