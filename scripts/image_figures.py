"""Snakemake script: the image figures (PNG) of one plate: illumination functions and image QC."""

from cellstrata.report.plate import write_plate_figures
from cellstrata.workflow.logs import logged

with logged(snakemake.log[0]):
    write_plate_figures(
        plate=snakemake.wildcards.plate,
        cell_counts_path=None,
        image_qc_path=snakemake.input.image_qc,
        illumination_paths={c: snakemake.input[c] for c in snakemake.params.channels},
        sample_sites=[],
        outputs=dict(snakemake.output.items()),
    )
