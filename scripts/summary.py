"""Snakemake script: a short, human-readable summary of the run."""

from cellstrata.report.summary import write_summary
from cellstrata.workflow.logs import logged

with logged(snakemake.log[0]):
    write_summary(
        snakemake.input.manifests,
        snakemake.output[0],
        experiment=snakemake.params.experiment,
        retention=snakemake.params.retention,
        version=snakemake.params.version,
        cellprofiler=snakemake.input.cellprofiler,
        current_versions=snakemake.params.versions,
    )
