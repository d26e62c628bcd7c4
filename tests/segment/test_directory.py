"""Nuclei of a directory of images (segment/directory.py, ``cellstrata segment-nuclei``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellstrata.io import ImageReadError
from cellstrata.segment import (
    segment_directory,
    segment_nuclei,
)
from segment.scenes import _as, _grid, _scene

# --------------------------------------------------------------------------------------------
# segment_directory
# --------------------------------------------------------------------------------------------


def _write_inputs(folder: Path) -> dict[str, np.ndarray]:
    """Nuclear images in several containers; returns the 2-D plane each should be read as."""
    import tifffile
    from skimage.io import imsave

    folder.mkdir()
    image, _ = _scene(_grid())
    plane8 = _as(image, np.uint8)
    other, _ = _scene([(80, 80)], radius=40, seed=3)  # one huge disc: not the nuclei
    planes = {
        "a.tif": _as(image, np.uint16),
        "b.png": plane8,  # written as RGBA: nuclei in the first channel
        "c.tiff": _as(image, np.float64).astype(np.float32),
        "d.png": plane8,  # RGB, another image in the other channels
    }
    tifffile.imwrite(folder / "a.tif", planes["a.tif"])
    imsave(folder / "b.png", np.dstack([plane8, plane8, plane8, np.full_like(plane8, 255)]))
    tifffile.imwrite(folder / "c.tiff", planes["c.tiff"])
    other8 = _as(other, np.uint8)
    imsave(folder / "d.png", np.dstack([plane8, other8, other8]), check_contrast=False)
    (folder / "notes.txt").write_text("not an image")
    tifffile.imwrite(folder / ".hidden.tif", planes["a.tif"])
    return planes


def test_segment_directory_writes_same_named_label_tiffs(tmp_path):
    import tifffile

    planes = _write_inputs(tmp_path / "in")
    written = segment_directory(tmp_path / "in", tmp_path / "out", diameter=16)
    assert [p.name for p in written] == ["a.tif", "b.tif", "c.tiff", "d.tif"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in written]
    for path, plane in zip(written, planes.values(), strict=True):
        with tifffile.TiffFile(path) as tif:
            labels = tif.asarray()
            assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert labels.dtype == np.uint16 and labels.shape == (160, 160)
        np.testing.assert_array_equal(labels, segment_nuclei(plane, diameter=16))
        assert labels.max() == 16, path.name


def test_segment_directory_uses_package_defaults(tmp_path):
    import tifffile

    _write_inputs(tmp_path / "in")
    written = segment_directory(tmp_path / "in", tmp_path / "out")  # diameter estimated
    assert len(written) == 4
    assert [int(tifffile.imread(p).max()) for p in written] == [16] * 4


def test_segment_directory_uint32_beyond_65535_labels(tmp_path, monkeypatch):
    import tifffile

    import cellstrata.segment.directory as segment

    many = np.arange(300 * 300, dtype=np.int32).reshape(300, 300)  # 89999 objects
    monkeypatch.setattr(segment, "segment_nuclei", lambda image: many)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "x.tif", np.zeros((300, 300), np.uint8))
    (target,) = segment_directory(tmp_path / "in", tmp_path / "out")
    labels = tifffile.imread(target)
    assert labels.dtype == np.uint32
    np.testing.assert_array_equal(labels, many)


def test_segment_directory_errors(tmp_path):
    import tifffile

    _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="'missing.pt': no such model file"):
        segment_directory(tmp_path / "in", out, method="cellpose", model="missing.pt")
    with pytest.raises(ValueError, match="unknown segmentation method 'watershed'"):
        segment_directory(tmp_path / "in", out, method="watershed")
    with pytest.raises(ValueError, match="diamter"):
        segment_directory(tmp_path / "in", out, diamter=16)
    with pytest.raises(ValueError, match="model"):
        segment_directory(tmp_path / "in", out, model="nuclei.pt")
    with pytest.raises(ValueError, match="overwrite"):
        segment_directory(tmp_path / "in", tmp_path / "in")
    with pytest.raises(FileNotFoundError, match="missing"):
        segment_directory(tmp_path / "missing", out)
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="no images"):
        segment_directory(tmp_path / "none", out)
    assert not out.exists()  # nothing written before the inputs were checked
    # a.png would overwrite the label image of a.tif
    tifffile.imwrite(tmp_path / "in" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"a\.png.*a\.tif|a\.tif.*a\.png"):
        segment_directory(tmp_path / "in", out)
    (tmp_path / "in" / "a.png").unlink()
    (tmp_path / "in" / "e.tif").write_bytes(b"not a tiff")
    with pytest.raises(ImageReadError, match="e.tif"):
        segment_directory(tmp_path / "in", out)
    tifffile.imwrite(tmp_path / "in" / "e.tif", np.zeros((2, 8, 8), np.uint8))  # a stack
    with pytest.raises(ImageReadError, match="e.tif"):
        segment_directory(tmp_path / "in", out)
