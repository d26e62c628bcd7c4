"""The cellpose segmentation method, with a tiny cellpose model trained here on synthetic nuclei.

Built-in cellpose weights cannot be downloaded on the test machines, so a module fixture
trains a small cellpose 3 model (standard network, 150 steps on 32 px crops of synthetic
ellipses: about 20 s on 2 cores) and saves it to a temporary folder; the tests load it through
the same code path as any custom model file. Tests of the parts that need no model (config
checks, :func:`reconcile_cells`) run without cellpose installed.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import REPO, example_config, main_version, run_snakemake
from scipy import ndimage as ndi
from skimage.draw import disk, ellipse
from workflow.test_validate import MINIMAL, _write

from cellstrata.config import (
    ConfigError,
)
from cellstrata.io import site_file, write_tiff
from cellstrata.segment import (
    CellposeError,
    check_cellpose_options,
    reconcile_cells,
    segment_batch,
    segment_directory,
)
from cellstrata.segment.evaluate import MatchCounts, match_f1
from cellstrata.segment.versions import segmentation_versions
from cellstrata.workflow.validate import (
    load_config,
)

# cellpose's own code triggers these; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings(
        "ignore:Sparse invariant checks are implicitly disabled:UserWarning"
    ),
]

# --------------------------------------------------------------------------------------------
# synthetic data and the tiny model
# --------------------------------------------------------------------------------------------


def _nuclei_scene(seed: int, shape=(128, 128), n=14) -> tuple[np.ndarray, np.ndarray]:
    """Float image of blurred ellipses (radii 5-10 px, varied brightness) on noise, and truth."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int32)
    signal = np.zeros(shape)
    for _ in range(300):
        if truth.max() == n:
            break
        rr, cc = ellipse(
            *rng.uniform(0, shape[0], 2),
            rng.uniform(5, 10),
            rng.uniform(5, 9),
            shape=shape,
            rotation=rng.uniform(0, np.pi),
        )
        if rr.size < 20 or truth[rr, cc].any():
            continue
        truth[rr, cc] = truth.max() + 1
        signal[rr, cc] = rng.uniform(0.3, 1.0)
    image = 0.1 + ndi.gaussian_filter(signal, 1.0) + rng.normal(0, 0.03, shape)
    return image.astype(np.float32), truth


@pytest.fixture(scope="module")
def cellpose_model(tmp_path_factory) -> Path:
    """A cellpose 3 model file trained on 16 synthetic scenes (nuclei ~15 px across)."""
    pytest.importorskip("cellpose", reason="the cellpose method needs the cellpose package")
    import torch
    from cellpose import models, train

    from cellstrata.segment import cellpose_version

    if not str(cellpose_version()).startswith("3."):
        pytest.skip(f"training the test model needs cellpose 3 (installed: {cellpose_version()})")
    scenes = [_nuclei_scene(seed) for seed in range(16)]
    torch.manual_seed(0)
    # diam_mean 15: the scenes' own scale, so training needs no rescaling.
    net = models.CellposeModel(gpu=False, pretrained_model=False, diam_mean=15.0).net
    start = time.perf_counter()
    path = train.train_seg(
        net,
        train_data=[image for image, _ in scenes],
        train_labels=[truth for _, truth in scenes],
        channels=[0, 0],
        n_epochs=150,  # one batch of 8 crops per epoch
        nimg_per_epoch=8,
        batch_size=8,
        learning_rate=0.01,
        bsize=32,
        rescale=False,
        min_train_masks=1,
        save_path=tmp_path_factory.mktemp("cellpose"),
        model_name="tiny_nuclei",
        save_every=10_000,
    )[0]
    print(f"\ntiny cellpose model trained in {time.perf_counter() - start:.1f} s")
    return Path(path)


def _assert_one_id_per_cell(masks: dict[str, np.ndarray]) -> None:
    """The package's invariant: nucleus k, cell k and cytoplasm k are one cell."""
    nuclei, cells, cyto = masks["nuclei"], masks["cells"], masks["cytoplasm"]
    ids = np.unique(nuclei[nuclei > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    np.testing.assert_array_equal(np.unique(cells[cells > 0]), ids)
    assert (cells[nuclei > 0] == nuclei[nuclei > 0]).all()  # each nucleus inside its cell
    np.testing.assert_array_equal(cyto, np.where(nuclei > 0, 0, cells))


def _write_sites(folder: Path, sites: dict[tuple[str, int], dict[str, np.ndarray]]) -> Path:
    """Corrected site stacks as the correct rule writes them (channel names in metadata)."""
    folder.mkdir(parents=True, exist_ok=True)
    for (well, site), images in sites.items():
        stack = np.stack(list(images.values())).astype(np.float32)
        write_tiff(folder / site_file(well, site), stack, metadata={"channels": list(images)})
    return folder


def _segment_sites(tmp_path: Path, sites: dict, cells=None, **cellpose) -> Path:
    """Segment ``sites`` (DNA, AGP) as one job with cellpose; returns the masks folder."""
    corrected = _write_sites(tmp_path / "corrected", sites)
    segment_batch(
        corrected,
        tmp_path / "masks",
        nuclei_channel="DNA",
        cell_channel="AGP",
        cells=cells,
        method="cellpose",
        cellpose=cellpose,
    )
    return tmp_path / "masks"


def _read_masks(folder: Path, well: str, site: int) -> dict[str, np.ndarray]:
    return {
        part: tifffile.imread(folder / site_file(well, site, f"_{part}")).astype(np.int32)
        for part in ("nuclei", "cells", "cytoplasm")
    }


# --------------------------------------------------------------------------------------------
# segment-nuclei on a directory, and accuracy
# --------------------------------------------------------------------------------------------


def test_segment_directory_with_a_model_file(cellpose_model, tmp_path):
    truths = {}
    (tmp_path / "in").mkdir()
    for seed in range(100, 106):  # not among the training scenes
        image, truth = _nuclei_scene(seed)
        tifffile.imwrite(tmp_path / f"in/scene{seed}.tif", np.round(image * 20000).astype("u2"))
        truths[f"scene{seed}.tif"] = truth
    start = time.perf_counter()
    written = segment_directory(
        tmp_path / "in", tmp_path / "out", method="cellpose", model=cellpose_model
    )
    elapsed = time.perf_counter() - start
    assert [p.name for p in written] == sorted(truths)
    total = MatchCounts(0, 0, 0)
    for path in written:
        labels = tifffile.imread(path)
        assert labels.dtype == np.uint16
        total = total + match_f1(truths[path.name], labels)
    print(
        f"\ntiny cellpose model, 6 held-out scenes ({total.tp + total.fn} nuclei): "
        f"F1={total.f1:.3f} precision={total.precision:.3f} recall={total.recall:.3f} "
        f"in {elapsed:.1f} s"
    )
    # 1.000 when written; the classical defaults also reach ~1 on such easy scenes.
    assert total.f1 >= 0.9


def test_segment_nuclei_command_with_cellpose(cellpose_model, tmp_path, capsys):
    from cellstrata.cli import main

    image, truth = _nuclei_scene(7)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in/a.tif", image)
    argv = ["segment-nuclei", str(tmp_path / "in"), str(tmp_path / "out"), "--method", "cellpose"]
    assert main([*argv, "--model", str(cellpose_model), "--diameter", "15"]) == 0
    assert match_f1(truth, tifffile.imread(tmp_path / "out/a.tif")).f1 >= 0.9
    # --gpu without a GPU: cellpose runs on the CPU (a warning says so).
    assert main([*argv, "--model", str(cellpose_model), "--gpu"]) == 0
    assert main([*argv, "--model", str(tmp_path / "missing.pt")]) == 1
    assert "missing.pt" in capsys.readouterr().err


def test_builtin_model_that_cannot_be_fetched_says_so(cellpose_model, tmp_path, monkeypatch):
    import urllib.error

    from cellpose import models

    def offline(url, dst, progress=True):
        raise urllib.error.URLError("no network in this test")

    # Never download for real (nor into the home folder), whatever network the machine has.
    monkeypatch.setattr(models, "MODEL_DIR", tmp_path / "weights")
    monkeypatch.setattr(models.utils, "download_url_to_file", offline)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in/a.tif", _nuclei_scene(1)[0])
    with pytest.raises(CellposeError) as err:
        segment_directory(tmp_path / "in", tmp_path / "out", method="cellpose", model="nuclei")
    message = str(err.value)
    assert "'nuclei'" in message and "could not be fetched" in message
    assert str(tmp_path / "weights") in message and "local model file" in message
    # The default model (None) is the built-in nucleus model of the installed cellpose.
    with pytest.raises(CellposeError, match="'nuclei'.*could not be fetched"):
        segment_directory(tmp_path / "in", tmp_path / "out", method="cellpose")
    # A name of another cellpose version is refused before any download.
    with pytest.raises(CellposeError, match="'cpsam'.*not a built-in model of the installed"):
        segment_directory(tmp_path / "in", tmp_path / "out", method="cellpose", model="cpsam")


def test_model_errors_without_loading(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in/a.tif", np.zeros((32, 32), np.uint16))
    with pytest.raises(ValueError, match="no such model file.*built-in model name"):
        segment_directory(tmp_path / "in", tmp_path / "out", method="cellpose", model="nucleii")
    with pytest.raises(ValueError, match="unknown cellpose option key.*'threshold'"):
        segment_directory(tmp_path / "in", tmp_path / "out", method="cellpose", threshold=1)
    with pytest.raises(ValueError, match="not used for nuclei alone"):
        segment_directory(tmp_path / "in", tmp_path / "o", method="cellpose", cell_model="cyto3")
    # cellpose not importable (a classical-only install): a clear error, no traceback maze.
    monkeypatch.setitem(sys.modules, "cellpose", None)
    with pytest.raises(CellposeError, match="needs the optional cellpose package"):
        segment_directory(tmp_path / "in", tmp_path / "out", method="cellpose")
    assert not (tmp_path / "out").exists()


def test_cellpose4_calls_follow_its_documented_api(tmp_path, monkeypatch, caplog):
    # cellpose 4 cannot be installed here (torchvision has no CPU build): a stand-in that
    # records how it is called checks the plumbing of the cellpose 4 branch, not cellpose 4.
    import types

    from cellstrata.segment import cellpose as segment

    calls = []

    class StandIn:
        def __init__(self, gpu=False, pretrained_model="cpsam_v2", **kwargs):
            calls.append(("load", pretrained_model, kwargs))
            self.gpu, self.device = False, "cpu"

        def eval(self, x, **kwargs):
            calls.append(("eval", x, kwargs))
            return [ndi.label(image[..., 0] > 0.5)[0] for image in x], None, None

    models = types.SimpleNamespace(
        CellposeModel=StandIn, MODEL_NAMES=["cpsam_v2", "cpsam"], MODEL_DIR=tmp_path
    )
    monkeypatch.setitem(sys.modules, "cellpose", types.SimpleNamespace(models=models))
    monkeypatch.setattr(segment, "cellpose_version", lambda: "4.2.1.1")
    images, _ = _cell_scene()
    _segment_sites(tmp_path, {("A01", 1): images}, cell_model="cpsam", cell_channels=[1, 0])
    assert [call[:2] for call in calls if call[0] == "load"] == [("load", "cpsam")] * 2
    assert all(not call[2] for call in calls if call[0] == "load")  # no model_type
    evals = [call for call in calls if call[0] == "eval"]
    assert len(evals) == 2  # nuclei, then cells
    for _, x, kwargs in evals:
        assert isinstance(x, list) and x[0].shape == (160, 160, 3)  # padded to 3 channels
        assert kwargs["channel_axis"] == 2 and "channels" not in kwargs and "z_axis" not in kwargs
    np.testing.assert_array_equal(evals[1][1][0][..., 2], 0)  # (cell, nuclear, empty)
    assert "channels and cell_channels are ignored" in caplog.text
    masks = _read_masks(tmp_path / "masks", "A01", 1)
    _assert_one_id_per_cell(masks)
    assert masks["nuclei"].max() == 15


# --------------------------------------------------------------------------------------------
# segment_batch: the workflow's entry point
# --------------------------------------------------------------------------------------------


def test_segment_batch_on_example_sites_matches_the_truth(
    cellpose_model, small_example, tmp_path, monkeypatch
):
    from cellstrata.segment import cellpose as segment

    truth = pd.read_parquet(small_example / "ground_truth/cells.parquet")
    truth = truth.groupby(["well", "site"]).size()
    images = small_example / "images/SYN01"
    wells = ["A01", "B06"]  # a control and a top dose
    sites = {
        (well, site): {
            name: tifffile.imread(images / f"SYN01_{well}_s{site}_w{n}.tif").astype(np.float32)
            for n, name in ((1, "DNA"), (2, "GFP"), (3, "AGP"))
        }
        for well in wells
        for site in (1, 2)
    }
    loads, calls = [], []
    model_class = segment._CellposeModel
    monkeypatch.setattr(
        model_class, "__init__", _spy(model_class.__init__, lambda *a, **k: loads.append(1))
    )
    monkeypatch.setattr(
        model_class,
        "segment",
        _spy(model_class.segment, lambda s, im, *a, **k: calls.append(len(im))),
    )
    options = {"model": str(cellpose_model), "diameter": 16, "batch_size": 4}
    _segment_sites(tmp_path, sites, {"max_distance": 30}, **options)
    assert loads == [1]  # the model is loaded once for the job
    assert calls == [3, 1]  # 256 px sites, batches of 4 tiles of 224 px: 3 sites per call
    errors = []
    for well, site in sites:
        masks = _read_masks(tmp_path / "masks", well, site)
        _assert_one_id_per_cell(masks)
        errors.append(masks["nuclei"].max() / truth[well, site] - 1)
        assert (masks["cytoplasm"] > 0).sum() > (masks["nuclei"] > 0).sum()  # grown on AGP
    print(f"\ncellpose nuclei per site vs truth: relative errors {np.round(errors, 3).tolist()}")
    assert max(np.abs(errors)) <= 0.1 and abs(np.mean(errors)) <= 0.03


def _spy(method, record):
    def wrapper(*args, **kwargs):
        record(*args, **kwargs)
        return method(*args, **kwargs)

    return wrapper


def _cell_scene() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Nuclei (radius 6) in round cells (radius 13) on a grid, one cell without a nucleus."""
    shape = (160, 160)
    rng = np.random.default_rng(5)
    nuclear, cell = np.zeros(shape), np.zeros(shape)
    truth_cells = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate((y, x) for y in (24, 60, 96, 132) for x in (24, 60, 96, 132)):
        cell[disk((y, x), 13, shape=shape)] = 0.6
        if k == 5:
            continue  # an anucleate cell: not a cell of the results
        truth_cells[disk((y, x), 13, shape=shape)] = truth_cells.max() + 1
        nuclear[disk((y + rng.integers(-3, 4), x + rng.integers(-3, 4)), 6, shape=shape)] = 0.8
    images = {
        name: 0.1 + ndi.gaussian_filter(signal, 1.0) + rng.normal(0, 0.02, shape)
        for name, signal in (("DNA", nuclear), ("AGP", cell))
    }
    return images, truth_cells


def test_cell_model_gives_cells_the_ids_of_their_nuclei(cellpose_model, tmp_path):
    images, truth_cells = _cell_scene()
    blank = {name: np.zeros_like(image) for name, image in images.items()}
    _segment_sites(
        tmp_path,
        {("A01", 1): images, ("A01", 2): blank},
        model=str(cellpose_model),
        # The nuclei model doubles as the cell model: round cells are large nuclei to it.
        cell_model=str(cellpose_model),
        cell_diameter=26,
        cell_channels=[1, 0],  # it was trained on one grayscale channel
    )
    masks = _read_masks(tmp_path / "masks", "A01", 1)
    _assert_one_id_per_cell(masks)
    assert masks["nuclei"].max() == 15  # the anucleate cell is dropped
    cells = match_f1(truth_cells, masks["cells"])
    assert cells.f1 >= 0.9, cells
    assert all(not m.any() for m in _read_masks(tmp_path / "masks", "A01", 2).values())


def test_empty_and_blank_sites_give_empty_masks(cellpose_model, tmp_path):
    rng = np.random.default_rng(0)
    sites = {
        ("A01", 1): {"DNA": np.zeros((96, 96)), "AGP": np.zeros((96, 96))},
        ("A01", 2): {"DNA": np.full((96, 96), 7.0), "AGP": rng.random((96, 96))},
    }
    _segment_sites(tmp_path, sites, model=str(cellpose_model))
    for well, site in sites:
        masks = _read_masks(tmp_path / "masks", well, site)
        assert all(m.shape == (96, 96) and not m.any() for m in masks.values())
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in/blank.tif", np.zeros((64, 64), np.uint16))
    (written,) = segment_directory(
        tmp_path / "in", tmp_path / "out", method="cellpose", model=cellpose_model
    )
    assert not tifffile.imread(written).any()


def test_segment_batch_refuses_options_of_the_other_method(tmp_path):
    args = (tmp_path / "corrected", tmp_path / "masks")
    kwargs = {"nuclei_channel": "DNA"}
    with pytest.raises(ValueError, match="cellpose options apply to method 'cellpose' only"):
        segment_batch(*args, **kwargs, cellpose={"gpu": True})
    with pytest.raises(ValueError, match="apply to method 'classical' only"):
        segment_batch(*args, **kwargs, method="cellpose", nuclei={"diameter": 12})
    with pytest.raises(ValueError, match="cell_model needs a cell_channel"):
        segment_batch(*args, **kwargs, method="cellpose", cellpose={"cell_model": "cyto3"})
    with pytest.raises(ValueError, match="unknown segmentation method 'stardist'"):
        segment_batch(*args, **kwargs, method="stardist")


# --------------------------------------------------------------------------------------------
# reconcile_cells (no model needed)
# --------------------------------------------------------------------------------------------


def test_reconcile_cells_cases():
    nuclei = np.zeros((40, 80), np.int32)
    cells = np.zeros((40, 80), np.int32)
    cells[2:18, 2:18] = 9  # one nucleus
    nuclei[6:12, 6:12] = 4
    cells[2:18, 22:50] = 3  # two nuclei: a binucleate cell, shared
    nuclei[6:12, 25:31] = 7
    nuclei[6:12, 40:46] = 8
    cells[22:38, 2:18] = 5  # no nucleus: dropped
    nuclei[25:31, 30:36] = 2  # no cell: a cell of its own pixels
    cells[22:38, 52:70] = 6  # a nucleus mostly outside it (2 of 6 columns): does not join
    nuclei[28:34, 68:74] = 11
    cells[2:18, 60:78] = 12  # a nucleus straddling two cells joins the one holding most of it
    cells[2:18, 50:60] = 13
    nuclei[6:12, 57:65] = 10  # 3 columns in cell 13, 5 in cell 12
    out = reconcile_cells(nuclei, cells)
    assert out.dtype == np.int32
    _assert_one_id_per_cell_any_labels(nuclei, out)
    assert (out[2:18, 2:18] == 4).all()
    assert set(np.unique(out[2:18, 22:50])) == {7, 8}
    assert (out[2:18, 22:35] == 7).all() and (out[2:18, 36:50] == 8).all()  # 35: a tie
    assert not out[22:38, 2:18].any()
    np.testing.assert_array_equal(out == 2, nuclei == 2)
    np.testing.assert_array_equal(out == 11, nuclei == 11)
    assert not (out == 6).any()
    assert (out[2:18, 60:78] == 10).all() and not np.isin(out[2:18, 50:57], [10, 13]).any()
    # Empty inputs give empty masks.
    assert not reconcile_cells(np.zeros_like(nuclei), cells).any()
    np.testing.assert_array_equal(reconcile_cells(nuclei, np.zeros_like(cells)), nuclei)


def _assert_one_id_per_cell_any_labels(nuclei: np.ndarray, cells: np.ndarray) -> None:
    ids = np.unique(nuclei[nuclei > 0])
    np.testing.assert_array_equal(np.unique(cells[cells > 0]), ids)
    assert (cells[nuclei > 0] == nuclei[nuclei > 0]).all()
    for k in ids:  # every cell is one piece
        assert ndi.label(cells == k)[1] == 1


def test_reconcile_cells_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        reconcile_cells(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="integer"):
        reconcile_cells(np.zeros((4, 4), float), np.zeros((4, 4), int))


# --------------------------------------------------------------------------------------------
# configuration (no model needed; cellpose is never imported)
# --------------------------------------------------------------------------------------------


def _cellpose_config(tmp_path, **segmentation):
    config = copy.deepcopy(MINIMAL)
    config["channels"] = {"1": "DNA", "2": "AGP"}
    config["segmentation"] = {"method": "cellpose", **segmentation}
    return config


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        ({"cellpose": {"model": "models/missing.pt"}}, "'models/missing.pt': no such model file"),
        ({"method": "classical", "cellpose": {"gpu": True}}, r"cellpose: \['gpu'\] apply to"),
        ({"nuclei": {"diameter": 20}}, "nuclei: segment_nuclei parameters apply to method"),
        (
            {"cell_channel": "AGP", "cells": {"expansion": 5}, "cellpose": {"cell_model": "cyto3"}},
            "cells: segment_cells parameters are not used",
        ),
        ({"cellpose": {"cell_model": "cyto3"}}, "cell_model needs a cell_channel"),
        (
            {"extra_versions": [{"cellpose": {"diamter": 20}}]},
            "unknown cellpose option key.*'diamter'",
        ),
        (
            {"method": "classical", "extra_versions": [{"cellpose": {"model": "cyto3"}}]},
            r"extra_versions\[0\].cellpose: \['model'\] apply to method cellpose only",
        ),
    ],
)
def test_config_errors(tmp_path, segmentation, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, _cellpose_config(tmp_path, **segmentation)))


@pytest.mark.parametrize(
    "cellpose",
    [{"modle": "cyto3"}, {"channels": [0, 2]}, {"batch_size": 0}, {"diameter": 0}],
)
def test_schema_rejects_bad_cellpose_options(tmp_path, cellpose):
    from snakemake.exceptions import WorkflowError

    with pytest.raises(WorkflowError):
        load_config(_write(tmp_path, _cellpose_config(tmp_path, cellpose=cellpose)))


def test_cellpose_versions_and_their_parameters(tmp_path):
    model = tmp_path / "nuclei_model.pt"
    model.write_bytes(b"weights")
    config = _cellpose_config(
        tmp_path,
        method="classical",
        cell_channel="AGP",
        nuclei={"diameter": 16},
        cells={"max_distance": 30},
        extra_versions=[
            {"method": "cellpose", "cellpose": {"model": str(model), "gpu": True}},
            {"method": "cellpose", "cellpose": {"model": "nuclei", "cell_model": "cyto3"}},
        ],
    )
    classical_only = copy.deepcopy(config)
    del classical_only["segmentation"]["extra_versions"]
    versions = segmentation_versions(load_config(_write(tmp_path, config)))
    tags = list(versions)
    # The classical version keeps the hash it had before cellpose options existed.
    assert tags[0] == main_version(classical_only) and "cellpose" not in versions[tags[0]]
    first, second = versions[tags[1]], versions[tags[2]]
    assert tags[1].startswith("cellpose-") and tags[2].startswith("cellpose-")
    assert "nuclei" not in first and first["cells"] == {"method": "propagation", "max_distance": 30}
    defaults = check_cellpose_options({}).as_dict()
    assert first["cellpose"] == {**defaults, "model": str(model), "gpu": True}
    assert "cells" not in second  # the cell model makes the cells
    # Options written out in full hash like options left to their defaults.
    full = copy.deepcopy(config)
    full["segmentation"]["extra_versions"][0]["cellpose"] = first["cellpose"]
    assert list(segmentation_versions(load_config(_write(tmp_path, full)))) == tags


def test_config_check_does_not_import_cellpose(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    path = _write(tmp_path, _cellpose_config(tmp_path, cellpose={"model": str(model)}))
    code = (
        "import sys; from cellstrata.workflow.validate import load_config; "
        f"load_config({str(path)!r}); "
        "print(sorted(m for m in ('cellpose', 'torch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# the workflow
# --------------------------------------------------------------------------------------------


@pytest.mark.workflow
def test_workflow_with_cellpose(cellpose_model, small_example, tmp_path):
    config = example_config(small_example)
    config["segmentation"] = {
        "method": "cellpose",
        "nuclei_channel": "DNA",
        "cell_channel": "AGP",
        "cells": {"max_distance": 30},
        "cellpose": {"model": str(cellpose_model), "diameter": 16},
    }
    config["crops"] = {"enabled": False}
    version = main_version(config)
    assert version.startswith("cellpose-")
    start = time.perf_counter()
    run_snakemake(
        tmp_path, config, targets=[f"results/profiles/{version}/SYN01/SYN01_aggregated.parquet"]
    )
    print(f"\nworkflow with cellpose to aggregated profiles: {time.perf_counter() - start:.0f} s")
    masks = sorted((tmp_path / "results/masks" / version / "SYN01").glob("*/*.tiff"))
    assert len(masks) == 12 * 2 * 3
    truth = pd.read_csv(small_example / "ground_truth/wells.csv").set_index("well")
    profiles = pd.read_parquet(
        tmp_path / f"results/profiles/{version}/SYN01/SYN01_aggregated.parquet"
    ).set_index("Metadata_Well")
    error = profiles["Metadata_Object_Count"] / truth.loc[profiles.index, "n_cells"] - 1
    assert error.abs().max() <= 0.10, error.to_dict()
    # The model file is an input of the job: its hash is in the provenance record.
    record = json.loads(
        (tmp_path / f"results/provenance/SYN01/segment/{version}/A01-A06.json").read_text()
    )
    inputs = {item["path"]: item["md5"] for item in record["inputs"]}
    assert str(cellpose_model) in inputs
    assert record["params"]["segmentation"]["cellpose"]["model"] == str(cellpose_model)
    # On a cluster the job asks for a GPU when the version runs cellpose on one.
    config["segmentation"]["cellpose"]["gpu"] = True
    assert _dry_run_resources(tmp_path, config, "segment") == {"gpu": "1"}
    config["segmentation"]["method"] = "classical"
    del config["segmentation"]["cellpose"]
    assert _dry_run_resources(tmp_path, config, "segment") == {"gpu": "0"}


def _dry_run_resources(workdir: Path, config: dict, rule: str) -> dict[str, str]:
    """The gpu resource of the first job of ``rule`` in a dry run (``snakemake -n``)."""
    import yaml

    path = workdir / "dry_config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--forceall",
            "--directory",
            str(workdir),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--configfile",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    text = result.stdout + result.stderr
    block = text[text.index(f"rule {rule}:") :]
    line = next(line for line in block.splitlines() if "resources:" in line)
    pairs = dict(item.strip().split("=", 1) for item in line.split(":", 1)[1].split(","))
    return {"gpu": pairs.get("gpu")}
