"""Snakemake script: build and validate the image manifest of one plate."""

from cellstrata.images.ingest import write_manifest
from cellstrata.stewardship.provenance import recorded_job

# The DAG sees the image root, not each image (rules/ingest.smk); the record lists them all.
read = []
with recorded_job(snakemake, inputs=read):
    manifest = write_manifest(
        snakemake.wildcards.plate,
        snakemake.params.root,
        snakemake.params.pattern,
        snakemake.params.channels,
        snakemake.output[0],
        extensions=snakemake.params.extensions,
        wells_per_job=snakemake.params.wells_per_job,
        require_all_sites=snakemake.params.require_all_sites,
    )
    read.extend(manifest["path"])
