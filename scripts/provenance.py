"""Snakemake script: collect every job's provenance record into one table."""

from cellstrata.logs import logged
from cellstrata.provenance import write_table

with logged(snakemake.log[0]):
    write_table("results", snakemake.output[0])
