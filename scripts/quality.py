"""Snakemake script: mAP, Z' and cell counts of a version's plates."""

from cellstrata.profiles.quality import write_quality
from cellstrata.stewardship.provenance import recorded_job

with recorded_job(snakemake):
    write_quality(
        snakemake.input.profiles,
        snakemake.input.annotated,
        {name: snakemake.output[name] for name in ("map", "zprime", "cell_counts")},
        cell_qc_paths=snakemake.input.cell_qc,
        treatment_columns=snakemake.params.treatment_columns,
        readout=snakemake.params.readout,
        map_options=snakemake.params.map_options,
    )
