"""Snakemake script: the experiment figures (PNG) of a version: PCA, mAP and dose response."""

from cellstrata.report.experiment import write_experiment_figures
from cellstrata.workflow.logs import logged

with logged(snakemake.log[0]):
    write_experiment_figures(
        profiles_path=snakemake.input.profiles,
        annotated_path=snakemake.input.annotated,
        map_path=snakemake.input.map,
        zprime_path=snakemake.input.zprime,
        outputs=dict(snakemake.output.items()),
        color_by=snakemake.params.color_by,
        dose_column=snakemake.params.dose_column,
        readout=snakemake.params.readout,
    )
