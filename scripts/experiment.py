"""Snakemake script: a version's plates stacked, feature-selected and summarised per treatment."""

from cellstrata.profiles.experiment import write_experiment
from cellstrata.stewardship.provenance import recorded_job

with recorded_job(snakemake):
    write_experiment(
        snakemake.input.normalized,
        {name: snakemake.output[name] for name in ("normalized", "feature_selected", "consensus")},
        treatment_columns=snakemake.params.treatment_columns,
        feature_select_operations=snakemake.params.feature_select_operations,
        consensus_operation=snakemake.params.consensus_operation,
    )
