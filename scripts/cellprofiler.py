"""Snakemake script: one plate's CellProfiler output to the single-cell features level."""

from cellstrata.singlecell.cellprofiler import convert_plate
from cellstrata.stewardship.provenance import recorded_job

with recorded_job(snakemake):
    convert_plate(
        snakemake.params.source,
        snakemake.wildcards.plate,
        snakemake.output[0],
        options=snakemake.params.options,
        cellprofiler_plate=snakemake.params.cellprofiler_plate,
        threads=snakemake.threads,
    )
