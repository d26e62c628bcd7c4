"""Snakemake script: single-cell crops of one batch (HDF5 store + index Parquet)."""

from cellstrata.singlecell.crops import crop_batch
from cellstrata.stewardship.provenance import recorded_job

with recorded_job(snakemake):
    crop_batch(
        snakemake.input.corrected,
        snakemake.input.masks,
        snakemake.wildcards.plate,
        snakemake.output.store,
        snakemake.output.index,
        size=snakemake.params.size,
        compartment=snakemake.params.compartment,
        mask_channel=snakemake.params.mask_channel,
        mask_neighbours=snakemake.params.mask_neighbours,
    )
