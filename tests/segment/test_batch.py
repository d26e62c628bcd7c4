"""One site's nuclei, cells and cytoplasm (segment/batch.py)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.segmentation import expand_labels

from cellstrata.segment import (
    cytoplasm,
    segment_site,
)
from segment.scenes import _as, _assert_cells_match_nuclei, _cell_scene

# --------------------------------------------------------------------------------------------
# segment_site
# --------------------------------------------------------------------------------------------


def test_segment_site_shares_ids_and_passes_params():
    nuclei_image, cyto_image, _ = _cell_scene()
    out = segment_site(
        _as(nuclei_image, np.uint16),
        _as(cyto_image, np.uint16),
        nuclei_params={"diameter": 14, "threshold_method": "li"},
        cell_params={"max_distance": 20},
    )
    nuclei, cells, cyto = out["nuclei"], out["cells"], out["cytoplasm"]
    assert nuclei.max() == 6
    _assert_cells_match_nuclei(nuclei, cells)
    np.testing.assert_array_equal(cyto, cytoplasm(nuclei, cells))
    # Without a cell image: expansion with the given distance.
    out = segment_site(nuclei_image, nuclei_params={"diameter": 14}, cell_params={"expansion": 3})
    np.testing.assert_array_equal(out["cells"], expand_labels(out["nuclei"], 3))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"nuclei_params": {"diameter": 14, "diamter": 3}}, "diamter"),
        ({"cell_params": {"expand": 5}}, "expand"),
    ],
)
def test_segment_site_unknown_param_key(kwargs, key):
    nuclei_image, _, _ = _cell_scene()
    with pytest.raises(ValueError, match=key):
        segment_site(nuclei_image, **kwargs)
