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


def _two_nuclei_in_one_stain() -> tuple[np.ndarray, np.ndarray]:
    """A nucleus cut by the left edge beside a whole one, one stained region around both."""
    from skimage.draw import disk

    nuclear = np.full((60, 90), 0.02)
    nuclear[disk((30, 2), 7, shape=nuclear.shape)] = 0.9
    nuclear[disk((30, 40), 7)] = 0.9
    body = np.full(nuclear.shape, 0.02)
    body[12:48, 0:60] = 0.5
    return nuclear, body


def test_cells_remove_border_grows_from_the_border_nuclei_too():
    nuclear, body = _two_nuclei_in_one_stain()
    nuclei_params = {"diameter": 14, "local_contrast": None, "remove_border": True}
    out = segment_site(
        nuclear, body, nuclei_params=nuclei_params, cell_params={"remove_border": True}
    )
    # The nuclei are segment_nuclei's with remove_border: the border nucleus is gone.
    alone = segment_site(nuclear, body, nuclei_params=nuclei_params)
    np.testing.assert_array_equal(out["nuclei"], alone["nuclei"])
    assert out["nuclei"].max() == 1
    # Without the border nucleus as a seed the whole cell reaches the edge; with it (as in
    # CellProfiler) the cell stops about halfway and, not touching the edge, is kept.
    assert alone["cells"][:, 0].any()
    cell = out["cells"] == 1
    assert cell.any() and not out["cells"][:, 0].any()
    assert 15 <= np.flatnonzero(cell.any(axis=0)).min() <= 30
    np.testing.assert_array_equal(out["cytoplasm"], cytoplasm(out["nuclei"], out["cells"]))


def test_cells_remove_border_keeps_the_nuclei_of_dropped_cells():
    nuclear, body = _two_nuclei_in_one_stain()
    out = segment_site(
        nuclear,
        body,
        nuclei_params={"diameter": 14, "local_contrast": None},
        cell_params={"remove_border": True},
    )
    # Both nuclei stay; the border nucleus's cell touches the edge and is gone.
    assert out["nuclei"].max() == 2
    assert set(np.unique(out["cells"])) == {0, 2}
    assert set(np.unique(out["cytoplasm"])) <= {0, 2}
