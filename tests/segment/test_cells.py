"""Cells and cytoplasm from nuclei (segment/cells.py): expansion, watershed and propagation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk
from skimage.segmentation import expand_labels

from cellstrata.segment import (
    cytoplasm,
    propagate,
    segment_cells,
    segment_nuclei,
)
from segment.scenes import _assert_cells_match_nuclei, _cell_scene

# --------------------------------------------------------------------------------------------
# cells and cytoplasm
# --------------------------------------------------------------------------------------------


def test_cells_contain_their_nuclei_and_share_ids():
    nuclei_image, cyto_image, cyto_truth = _cell_scene()
    nuclei = segment_nuclei(nuclei_image, diameter=14)
    assert nuclei.max() == 6
    cells = segment_cells(nuclei, cyto_image)
    _assert_cells_match_nuclei(nuclei, cells)
    # Cells follow the cytoplasm stain: well beyond the nuclei, not beyond the stained discs.
    for k in range(1, 7):
        true_id = np.bincount(cyto_truth[nuclei == k]).argmax()
        overlap = np.logical_and(cells == k, cyto_truth == true_id).sum()
        union = np.logical_or(cells == k, cyto_truth == true_id).sum()
        assert overlap / union > 0.75, (k, overlap / union)


def test_touching_cells_share_the_boundary_at_the_intensity_step():
    # Two cytoplasm discs overlap; the right one is dimmer, so the boundary follows the step.
    nuclei = np.zeros((80, 120), np.int32)
    nuclei[disk((40, 40), 6)] = 1
    nuclei[disk((40, 76), 6)] = 2
    image = np.full(nuclei.shape, 0.05)
    image[disk((40, 76), 22, shape=image.shape)] = 0.4
    image[disk((40, 40), 22, shape=image.shape)] = 0.8
    image += np.random.default_rng(0).normal(0, 0.01, image.shape)
    cells = segment_cells(nuclei, image)
    _assert_cells_match_nuclei(nuclei, cells)
    left_disc = np.zeros(nuclei.shape, bool)
    left_disc[disk((40, 40), 22, shape=image.shape)] = True
    assert np.mean(cells[left_disc] == 1) > 0.9
    assert np.mean(left_disc[cells == 2]) < 0.1


def test_nonsequential_nuclei_labels_and_overwritten_nuclei():
    nuclei_image, cyto_image, _ = _cell_scene()
    nuclei = segment_nuclei(nuclei_image, diameter=14)
    renumbered = np.where(nuclei > 0, nuclei * 7 + 3, 0).astype(np.int64)
    for cells in (segment_cells(renumbered, cyto_image), segment_cells(renumbered)):
        _assert_cells_match_nuclei(renumbered, cells)


def test_cytoplasm_is_cells_minus_nuclei():
    nuclei_image, cyto_image, _ = _cell_scene()
    nuclei = segment_nuclei(nuclei_image, diameter=14)
    cells = segment_cells(nuclei, cyto_image)
    cyto = cytoplasm(nuclei, cells)
    assert cyto.dtype == np.int32
    assert not cyto[nuclei > 0].any()
    np.testing.assert_array_equal(cyto[nuclei == 0], cells[nuclei == 0])
    assert set(np.unique(cyto[cyto > 0])) == set(range(1, 7))
    with pytest.raises(ValueError, match="shape"):
        cytoplasm(nuclei, cells[:-1])


def test_expansion_mode_without_image():
    nuclei_image, _, _ = _cell_scene()
    nuclei = segment_nuclei(nuclei_image, diameter=14)
    cells = segment_cells(nuclei, expansion=6)
    np.testing.assert_array_equal(cells, expand_labels(nuclei, 6))
    _assert_cells_match_nuclei(nuclei, cells)
    assert (cells > 0).sum() > (nuclei > 0).sum()
    # max_distance caps the expansion too.
    np.testing.assert_array_equal(
        segment_cells(nuclei, expansion=30, max_distance=4), expand_labels(nuclei, 4)
    )


def test_cell_image_without_contrast_falls_back_to_expansion():
    nuclei_image, _, _ = _cell_scene()
    nuclei = segment_nuclei(nuclei_image, diameter=14)
    noise = np.random.default_rng(4).normal(500, 20, nuclei.shape)
    np.testing.assert_array_equal(
        segment_cells(nuclei, noise, expansion=5), expand_labels(nuclei, 5)
    )


@pytest.mark.parametrize("max_distance", [5, 12])
def test_max_distance_respected(max_distance):
    # The whole field is bright "cytoplasm": only max_distance stops the cells.
    nuclei = np.zeros((120, 160), np.int32)
    for k, (y, x) in enumerate([(60, 30), (60, 56), (30, 120)], start=1):
        nuclei[disk((y, x), 5)] = k
    image = np.full(nuclei.shape, 0.1)
    image[5:-5, 5:-5] = 0.7
    image += np.random.default_rng(1).normal(0, 0.01, image.shape)
    cells = segment_cells(nuclei, image, max_distance=max_distance)
    _assert_cells_match_nuclei(nuclei, cells)
    for k in (1, 2, 3):
        dist_to_own = ndi.distance_transform_edt(nuclei != k)
        assert dist_to_own[cells == k].max() <= max_distance
    # ... and the limit is reached, not merely respected: the isolated cell fills its disc.
    lone = (ndi.distance_transform_edt(nuclei != 3) <= max_distance).sum()
    assert (cells == 3).sum() >= 0.95 * lone
    assert (cells > 0).sum() < 0.5 * cells.size


def test_max_distance_is_to_the_own_nucleus():
    # Nucleus 1 sits on a long stained band; nuclei 2 and 3 sit below it, each in its own
    # stained disc that does not touch the band. The whole band is within max_distance of
    # *some* nucleus, but only nucleus 1 can reach it, and most of it is too far from 1.
    nuclei = np.zeros((100, 200), np.int32)
    for k, center in enumerate([(30, 20), (70, 90), (70, 140)], start=1):
        nuclei[disk(center, 5)] = k
    image = np.full(nuclei.shape, 0.1)
    image[25:36, 10:170] = 0.7
    image[disk((70, 90), 10)] = 0.7
    image[disk((70, 140), 10)] = 0.7
    image += np.random.default_rng(2).normal(0, 0.01, image.shape)
    cells = segment_cells(nuclei, image, max_distance=45)
    _assert_cells_match_nuclei(nuclei, cells)
    for k in (1, 2, 3):
        assert ndi.distance_transform_edt(nuclei != k)[cells == k].max() <= 45
    assert (cells[25:36, 10:60] == 1).mean() > 0.95
    assert not cells[25:36, 80:170].any()


def test_empty_nuclei_give_empty_cells():
    image = np.random.default_rng(0).random((40, 50))
    nuclei = np.zeros((40, 50), np.int32)
    for cells in (segment_cells(nuclei, image), segment_cells(nuclei)):
        assert cells.dtype == np.int32 and cells.shape == (40, 50) and not cells.any()


# --------------------------------------------------------------------------------------------
# propagation (CellProfiler's IdentifySecondaryObjects method)
# --------------------------------------------------------------------------------------------


def _propagation_inputs(seed, shape=(48, 64)):
    """A smooth random image, a blobby mask and seeds partly outside the mask."""
    rng = np.random.default_rng(seed)
    image = ndi.gaussian_filter(rng.random(shape), 2) + 0.02 * rng.random(shape)
    blobs = ndi.gaussian_filter(rng.random(shape), 4)
    mask = blobs > np.quantile(blobs, 0.4)
    labels = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(rng.integers(3, np.array(shape) - 3, size=(9, 2)), start=1):
        labels[disk((y, x), rng.integers(1, 4), shape=shape)] = k
    return image, labels, mask


@pytest.mark.parametrize("regularization", [0.0, 0.05, 1.0, 10.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_propagate_is_cellprofilers(seed, regularization):
    """Our propagation equals CellProfiler's own (centrosome, which cp_measure installs)."""
    centrosome = pytest.importorskip("centrosome.propagate")
    image, labels, mask = _propagation_inputs(seed)
    assert 0.2 < mask.mean() < 0.8 and (labels > 0).any() and (labels[~mask] > 0).any()
    ours, distances = propagate(image, labels, mask, regularization)
    theirs, their_distances = centrosome.propagate(image, labels, mask, regularization)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(distances, their_distances, rtol=1e-9, atol=1e-12)


def test_propagate_bad_arguments():
    image, labels, mask = _propagation_inputs(0)
    with pytest.raises(ValueError, match="shape"):
        propagate(image[:-1], labels, mask, 0.05)
    with pytest.raises(ValueError, match="regularization"):
        propagate(image, labels, mask, -1.0)


def test_propagation_cells_stop_at_the_threshold_and_split_at_the_dim_valley():
    # Two cells touch; the stain dips between them, off the midline between the nuclei.
    nuclei = np.zeros((80, 140), np.int32)
    nuclei[disk((40, 40), 6)] = 1
    nuclei[disk((40, 90), 6)] = 2
    image = np.full(nuclei.shape, 0.05)
    image[disk((40, 40), 30, shape=image.shape)] = 0.6
    image[disk((40, 90), 24, shape=image.shape)] = 0.6
    # The valley (above the threshold), 8 px right of the midline between the nuclei.
    image[:, 73:75] = np.minimum(image[:, 73:75], 0.4)
    image += np.random.default_rng(0).normal(0, 0.001, image.shape)
    cells = segment_cells(nuclei, image, method="propagation", threshold_method="otsu")
    _assert_cells_match_nuclei(nuclei, cells)
    # Background stays background: the cells end where the stain ends.
    stained = image > 0.2
    assert not cells[~ndi.binary_dilation(stained)].any()
    assert (cells[stained] > 0).mean() > 0.97
    # The boundary follows the valley, not the midline at column 65.
    assert (cells[30:50, 66:72] == 1).mean() > 0.9
    assert (cells[30:50, 76:80] == 2).mean() > 0.9
    # The regularization decides how much distance counts: a very large factor splits at
    # the midline instead (CellProfiler's limit of Distance - N within the threshold).
    cells = segment_cells(
        nuclei, image, method="propagation", threshold_method="otsu", regularization=1e4
    )
    assert (cells[30:50, 67:72] == 2).mean() > 0.9


def test_three_class_otsu_keeps_the_middle_class():
    # Background 0.05, dim cytoplasm 0.3, bright cytoplasm 0.8: three-class Otsu with the
    # middle class as foreground keeps the dim cell; two-class Otsu loses most of it.
    nuclei = np.zeros((80, 140), np.int32)
    nuclei[disk((40, 35), 6)] = 1
    nuclei[disk((40, 105), 6)] = 2
    image = np.full(nuclei.shape, 0.05)
    image[disk((40, 35), 25, shape=image.shape)] = 0.8
    image[disk((40, 105), 25, shape=image.shape)] = 0.3
    image += np.random.default_rng(3).normal(0, 0.005, image.shape)
    dim = np.zeros(nuclei.shape, bool)
    dim[disk((40, 105), 25, shape=image.shape)] = True
    three = segment_cells(nuclei, image, method="propagation", threshold_method="otsu3")
    two = segment_cells(nuclei, image, method="propagation", threshold_method="otsu")
    assert (three[dim] == 2).mean() > 0.97
    assert (two[dim] == 2).mean() < 0.5


def test_propagation_fills_holes_in_cells():
    nuclei = np.zeros((60, 60), np.int32)
    nuclei[disk((30, 30), 5)] = 1
    image = np.full(nuclei.shape, 0.05)
    image[disk((30, 30), 20)] = 0.7
    image[disk((30, 44), 3)] = 0.05  # an unstained hole inside the cell
    image += np.random.default_rng(5).normal(0, 0.005, image.shape)
    cells = segment_cells(nuclei, image, method="propagation", threshold_method="otsu")
    assert (cells[disk((30, 44), 3)] == 1).all()


@pytest.mark.parametrize("method", ["propagation", "watershed"])
def test_cells_methods_keep_the_shared_contract(method):
    nuclei_image, cyto_image, cyto_truth = _cell_scene()
    nuclei = segment_nuclei(nuclei_image, diameter=14)
    cells = segment_cells(nuclei, cyto_image, method=method, max_distance=12)
    _assert_cells_match_nuclei(nuclei, cells)
    for k in range(1, 7):
        assert ndi.distance_transform_edt(nuclei != k)[cells == k].max() <= 12
    with pytest.raises(ValueError, match="method"):
        segment_cells(nuclei, cyto_image, method="voronoi")
    with pytest.raises(ValueError, match="threshold_method"):
        segment_cells(nuclei, cyto_image, method=method, threshold_method="otsu4")


def test_cytoplasm_keeps_the_nuclear_outline_when_asked():
    """CellProfiler's IdentifyTertiaryObjects, "shrink smaller object": the nucleus minus its
    outline is removed, so the one-pixel nuclear rim stays in the cytoplasm."""
    outline = pytest.importorskip("centrosome.outline").outline
    nuclei_image, cyto_image, _ = _cell_scene()
    nuclei = segment_nuclei(nuclei_image, diameter=14)
    cells = segment_cells(nuclei, cyto_image)
    cyto = cytoplasm(nuclei, cells, shrink_nuclei=True)
    rim = outline(nuclei) > 0
    np.testing.assert_array_equal(cyto[rim], cells[rim])
    assert not cyto[(nuclei > 0) & ~rim].any()
    np.testing.assert_array_equal(cyto[nuclei == 0], cells[nuclei == 0])


def _border_scene() -> tuple[np.ndarray, np.ndarray]:
    """Nucleus 1 in the middle, 2 whose cell reaches the left edge, 3 on the bottom edge."""
    nuclei = np.zeros((80, 100), np.int32)
    nuclei[disk((40, 50), 5)] = 1
    nuclei[disk((40, 14), 5)] = 2
    nuclei[disk((77, 80), 5, shape=nuclei.shape)] = 3
    image = np.full(nuclei.shape, 0.02)
    image[disk((40, 50), 14, shape=image.shape)] = 0.6
    image[disk((40, 14), 16, shape=image.shape)] = 0.6
    image[disk((77, 80), 10, shape=image.shape)] = 0.6
    return nuclei, image


@pytest.mark.parametrize("method", ["propagation", "watershed"])
def test_remove_border_discards_cells_touching_the_border(method):
    nuclei, image = _border_scene()
    kept = segment_cells(nuclei, image, method=method)
    cells = segment_cells(nuclei, image, method=method, remove_border=True)
    assert set(np.unique(kept)) == {0, 1, 2, 3}
    # Cells 2 and 3 touch the edge and go; cell 1 is what it was.
    assert set(np.unique(cells)) == {0, 1}
    np.testing.assert_array_equal(cells == 1, kept == 1)
    # Expansion as well.
    assert set(np.unique(segment_cells(nuclei, expansion=10, remove_border=True))) == {0, 1}


def test_remove_border_must_be_a_bool():
    nuclei, image = _border_scene()
    with pytest.raises(ValueError, match="remove_border must be true or false"):
        segment_cells(nuclei, image, remove_border="yes")
