"""Snakemake script: report figures (PNG) of one plate, or of a version's experiment."""

from cellstrata.report.plots import write_experiment_figures, write_plate_figures
from cellstrata.workflow.logs import logged

with logged(snakemake.log[0]):
    if snakemake.rule == "experiment_figures":
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
    else:
        write_plate_figures(
            plate=snakemake.wildcards.plate,
            cell_counts_path=snakemake.input.get("cell_counts"),
            profiles_path=snakemake.input.get("annotated"),
            image_qc_path=snakemake.input.get("image_qc"),
            illumination_paths={
                c: snakemake.input[c] for c in snakemake.params.get("channels", [])
            },
            sample_sites=snakemake.params.get("sample_sites", []),
            readout=snakemake.params.get("readout"),
            plate_format=snakemake.params.get("plate_format"),
            outputs=dict(snakemake.output.items()),
        )
