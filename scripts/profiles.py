"""Snakemake script: per-well profiles of one plate with pycytominer."""

from cellstrata.profiles.aggregate import write_profiles
from cellstrata.stewardship.provenance import recorded_job

with recorded_job(snakemake):
    write_profiles(
        snakemake.input.features,
        snakemake.input.platemap,
        dict(snakemake.output.items()),
        plate=snakemake.wildcards.plate,
        embedding_paths=list(snakemake.input.embeddings),
        # A path, or an empty list for a CellProfiler plate (no manifest).
        manifest=snakemake.input.manifest or None,
        platemap_options=snakemake.params.platemap,
        controls=snakemake.params.controls,
        **snakemake.params.options,
    )
