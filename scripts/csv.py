"""Snakemake script: a gzipped CSV copy of a Parquet profile table."""

from cellstrata.io import write_csv
from cellstrata.workflow.logs import logged

with logged(snakemake.log[0]):
    write_csv(snakemake.input[0], snakemake.output[0])
