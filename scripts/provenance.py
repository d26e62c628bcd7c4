"""Snakemake script: collect every job's provenance record into one table."""

from cellstrata.stewardship.provenance import write_table
from cellstrata.workflow.logs import logged

with logged(snakemake.log[0]):
    write_table("results", snakemake.output[0])
