"""Segmentation of nuclei, cells and cytoplasm: classical, or with cellpose.

The classical method (CPU, weight-free) is CellProfiler-like: ``IdentifyPrimaryObjects`` for
nuclei (:mod:`~cellstrata.segment.classical`) and ``IdentifySecondaryObjects`` (propagation
from the nuclei) for cells (:mod:`~cellstrata.segment.cells`). The cellpose method (optional
dependency, imported only when used; :mod:`~cellstrata.segment.cellpose`) finds the nuclei
with a cellpose model and grows the cells from them like the classical method, or takes them
from a second cellpose model (:func:`reconcile_cells`). Arrays in, label images out; only
:func:`segment_directory` (:mod:`~cellstrata.segment.directory`) and :func:`segment_batch`
(:mod:`~cellstrata.segment.batch`) read and write files. Parameters and their checks are in
:mod:`~cellstrata.segment.params`, version names in :mod:`~cellstrata.segment.versions`,
accuracy against ground truth in :mod:`~cellstrata.segment.evaluate`.

Label images are ``int32`` with background 0. Cell ``k`` and cytoplasm ``k`` are always the
same object as nucleus ``k``.
"""

from cellstrata.segment.batch import check_site_params, segment_batch, segment_site
from cellstrata.segment.cellpose import CellposeError
from cellstrata.segment.cells import cytoplasm, propagate, reconcile_cells, segment_cells
from cellstrata.segment.classical import THRESHOLD_METHODS, default_min_area, segment_nuclei
from cellstrata.segment.directory import (
    IMAGE_SUFFIXES,
    nuclei_segmenter,
    read_nuclear_image,
    segment_directory,
)
from cellstrata.segment.params import (
    CELL_METHODS,
    CELLPOSE_BUILTIN_MODELS,
    SEGMENTATION_METHODS,
    CellposeOptions,
    cellpose_model_files,
    cellpose_version,
    check_cellpose_options,
)

__all__ = [
    "CELLPOSE_BUILTIN_MODELS",
    "CELL_METHODS",
    "IMAGE_SUFFIXES",
    "SEGMENTATION_METHODS",
    "THRESHOLD_METHODS",
    "CellposeError",
    "CellposeOptions",
    "cellpose_model_files",
    "cellpose_version",
    "check_cellpose_options",
    "check_site_params",
    "cytoplasm",
    "default_min_area",
    "nuclei_segmenter",
    "propagate",
    "read_nuclear_image",
    "reconcile_cells",
    "segment_batch",
    "segment_cells",
    "segment_directory",
    "segment_nuclei",
    "segment_site",
]
