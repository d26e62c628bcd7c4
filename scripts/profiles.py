"""Snakemake script: per-well profiles of one plate with pycytominer."""

from cellstrata.logs import logged
from cellstrata.profiles import write_profiles

with logged(snakemake.log[0]):
    write_profiles(
        snakemake.input.features,
        snakemake.input.platemap,
        dict(snakemake.output.items()),
        platemap_options=snakemake.params.platemap,
        controls=snakemake.params.controls,
        **snakemake.params.options,
    )
