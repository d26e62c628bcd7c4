"""Snakemake script: a short, human-readable summary of the run, and the figure of the
storage cost month by month."""

from cellstrata.report.summary import write_summary
from cellstrata.stewardship.lifecycle import write_projection_figure
from cellstrata.workflow.logs import logged

with logged(snakemake.log[0]):
    write_summary(
        snakemake.input.manifests,
        snakemake.output.summary,
        experiment=snakemake.params.experiment,
        retention=snakemake.params.retention,
        version=snakemake.params.version,
        cellprofiler=snakemake.input.cellprofiler,
        current_versions=snakemake.params.versions,
    )
    write_projection_figure(
        snakemake.config, snakemake.output.projection, months=snakemake.params.months
    )
