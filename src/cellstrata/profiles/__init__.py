"""The per-well levels: pycytominer's profile chain, single-cell QC and assay quality."""
