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

from cellstrata.lazy import lazy_exports

#: Public name -> the module defining it: loaded on first use, so that a job reading version
#: names (:mod:`~cellstrata.segment.versions`) does not import the segmentation code.
_EXPORTS = {
    "CELLPOSE_BUILTIN_MODELS": "cellstrata.segment.params",
    "CELL_METHODS": "cellstrata.segment.params",
    "CellposeError": "cellstrata.segment.cellpose",
    "CellposeOptions": "cellstrata.segment.params",
    "IMAGE_SUFFIXES": "cellstrata.segment.directory",
    "SEGMENTATION_METHODS": "cellstrata.segment.params",
    "THRESHOLD_METHODS": "cellstrata.segment.classical",
    "cellpose_model_files": "cellstrata.segment.params",
    "cellpose_version": "cellstrata.segment.params",
    "check_cellpose_options": "cellstrata.segment.params",
    "check_site_params": "cellstrata.segment.batch",
    "cytoplasm": "cellstrata.segment.cells",
    "default_min_area": "cellstrata.segment.classical",
    "nuclei_segmenter": "cellstrata.segment.directory",
    "propagate": "cellstrata.segment.cells",
    "read_nuclear_image": "cellstrata.segment.directory",
    "reconcile_cells": "cellstrata.segment.cells",
    "segment_batch": "cellstrata.segment.batch",
    "segment_cells": "cellstrata.segment.cells",
    "segment_directory": "cellstrata.segment.directory",
    "segment_nuclei": "cellstrata.segment.classical",
    "segment_site": "cellstrata.segment.batch",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
