"""The cellstrata console command."""

from __future__ import annotations

import pytest
from conftest import REPO

from cellstrata.cli import main


def test_validate_shipped_config(capsys):
    assert main(["validate", str(REPO / "config/examples/bbbc013.yaml")]) == 0
    assert "valid (1 plate(s), channels ['GFP', 'DNA'])" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("segmentation: {nuclei: {diameterr: 12}}", "unknown nuclei_params key(s): 'diameterr'"),
        ("batching: {wells_per_job: 0}", "wells_per_job"),
    ],
)
def test_validate_reports_a_bad_config(tmp_path, capsys, extra, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "channels: {'1': DNA}\nplates: [{name: P1, images: i, platemap: m}]\n" + extra + "\n"
    )
    assert main(["validate", str(bad)]) == 1
    assert message in capsys.readouterr().err


def test_example_command(tmp_path, capsys):
    assert main(["example", str(tmp_path), "--plates", "X1"]) == 0
    assert (tmp_path / "platemap.csv").exists()
    assert len(list((tmp_path / "images/X1").glob("*.tif"))) == 4 * 6 * 2 * 3


def test_segment_nuclei_command(tmp_path, capsys):
    import numpy as np
    import tifffile
    from skimage.draw import disk

    image = np.zeros((96, 96), np.uint16)
    for center in ((25, 25), (25, 70), (70, 48)):
        image[disk(center, 9)] = 3000
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in/site1.tif", image)
    assert main(["segment-nuclei", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    labels = tifffile.imread(tmp_path / "out/site1.tif")
    assert labels.dtype == np.uint16 and labels.max() == 3
    # A model that is neither a file nor a built-in name is refused before cellpose loads.
    argv = ["segment-nuclei", str(tmp_path / "in"), str(tmp_path / "o2"), "--method", "cellpose"]
    assert main([*argv, "--model", "missing.pt"]) == 1
    assert "'missing.pt': no such model file" in capsys.readouterr().err
