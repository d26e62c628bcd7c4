"""Snakemake script: the segmentation overlays (PNG) of sample sites of one plate of a version."""

from cellstrata.report.plate import write_plate_figures
from cellstrata.workflow.logs import logged

with logged(snakemake.log[0]):
    write_plate_figures(
        plate=snakemake.wildcards.plate,
        cell_counts_path=None,
        image_qc_path=None,
        illumination_paths={},
        sample_sites=snakemake.params.sample_sites,
        outputs=dict(snakemake.output.items()),
    )
