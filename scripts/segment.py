"""Snakemake script: nuclei, cell and cytoplasm masks of one batch."""

from cellstrata.provenance import recorded_job
from cellstrata.segment import segment_batch

with recorded_job(snakemake):
    segment_batch(
        snakemake.input[0],
        snakemake.output[0],
        nuclei_channel=snakemake.params.nuclei_channel,
        cell_channel=snakemake.params.cell_channel,
        nuclei_params=snakemake.params.nuclei,
        cell_params=snakemake.params.cells,
    )
