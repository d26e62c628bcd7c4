"""Snakemake script: the overview figure (PNG) of one plate of a version: cells, cell-QC flags
and the readout per well."""

from cellstrata.report.plate import write_plate_figures
from cellstrata.workflow.logs import logged

with logged(snakemake.log[0]):
    write_plate_figures(
        plate=snakemake.wildcards.plate,
        cell_counts_path=snakemake.input.cell_counts,
        profiles_path=snakemake.input.annotated,
        image_qc_path=None,
        illumination_paths={},
        sample_sites=[],
        readout=snakemake.params.readout,
        plate_format=snakemake.params.plate_format,
        outputs=dict(snakemake.output.items()),
    )
