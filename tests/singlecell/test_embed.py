"""Embeddings: a small model, built here, on known crops; config checks; the workflow level."""

from __future__ import annotations

import copy
import re
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import example_config, main_version, run_snakemake

from cellstrata.config import (
    ConfigError,
)
from cellstrata.levels import (
    plate_level_versions,
)
from cellstrata.profiles.aggregate import aggregate_features, embedding_rows
from cellstrata.singlecell.crops import INDEX_COLUMNS
from cellstrata.singlecell.embed import (
    CELL_KEYS,
    EmbeddingError,
    embed_batch,
    embed_crops,
    load_model,
    model_format,
    normalize_crops,
)
from cellstrata.stewardship.tracked import (
    tracked_outputs,
)
from cellstrata.workflow.validate import (
    load_config,
)

CHANNELS = ["DNA", "GFP", "AGP"]
#: The test model: per-channel mean of the crop, then y = W m + b. Each channel has its own
#: power of ten in the first output, so a swapped or dropped channel changes every row.
WEIGHT = np.array([[1.0, 10.0, 100.0], [0.0, 1.0, 0.0], [2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
BIAS = np.array([0.0, 0.5, 0.0, 3.0])
N_CROPS = 7


def _write_store(tmp_path, n=N_CROPS, channels=(*CHANNELS, "mask"), size=9, name="job"):
    """A crop store in cellstrata.singlecell.crops' layout; crop i, channel c is the constant 8 i
    + c
    (mask channel: 1), so the per-channel means, and the model's output, are exact."""
    crops = np.zeros((n, len(channels), size, size), np.float32)
    for i in range(n):
        for c, channel in enumerate(channels):
            crops[i, c] = 1.0 if channel == "mask" else 8 * i + c
    store, index = tmp_path / f"{name}.h5", tmp_path / f"{name}.parquet"
    with h5py.File(store, "w") as handle:
        dataset = handle.create_dataset(
            "crops",
            data=crops,
            maxshape=(None, len(channels), size, size),
            chunks=(1, len(channels), size, size),
        )
        dataset.attrs["channels"] = np.array(list(channels), dtype=h5py.string_dtype())
    table = pd.DataFrame(
        {
            "Metadata_Plate": ["P1"] * n,
            "Metadata_Well": [f"A{1 + i // 3:02d}" for i in range(n)],
            "Metadata_Site": [1 + i % 2 for i in range(n)],
            "Metadata_ObjectNumber": [10 + i for i in range(n)],
            **{c: 0 for c in INDEX_COLUMNS if c.startswith(("Location", "Bounding", "Crop_"))},
            "crop_index": range(n),
        }
    ).astype(INDEX_COLUMNS)
    table.to_parquet(index, index=False)
    return store, index, crops


def _expected(crops: np.ndarray, rows=(0, 1, 2)) -> np.ndarray:
    means = crops[:, list(rows)].mean(axis=(2, 3), dtype=np.float64)
    return (means @ WEIGHT.T + BIAS).astype(np.float32)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _torchscript(torch, path, forward="linear"):
    """Save the test model (or a broken variant) as TorchScript."""

    class PoolLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 4)
            with torch.no_grad():
                self.linear.weight.copy_(torch.tensor(WEIGHT, dtype=torch.float32))
                self.linear.bias.copy_(torch.tensor(BIAS, dtype=torch.float32))

        def forward(self, x):
            return self.linear(x.mean(dim=(2, 3)))

    class Rank3(PoolLinear):
        def forward(self, x):
            return self.linear(x.mean(dim=(2, 3))).unsqueeze(-1)

    class FirstRowOnly(PoolLinear):
        def forward(self, x):
            return self.linear(x.mean(dim=(2, 3)))[:1]

    module = {"linear": PoolLinear, "rank3": Rank3, "first_row": FirstRowOnly}[forward]()
    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.script
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))
    return path


@pytest.fixture(scope="module")
def torchscript_model(torch, tmp_path_factory):
    return _torchscript(torch, tmp_path_factory.mktemp("model") / "pool_linear.pt")


def _onnx(path, *, weight=WEIGHT, bias=BIAS):
    """The same model as ONNX, built node by node with onnx.helper (no exporter involved):
    GlobalAveragePool -> Flatten -> Gemm."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["crops"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["means"], axis=1),
            helper.make_node("Gemm", ["means", "weight", "bias"], ["embedding"], transB=1),
        ],
        "pool_linear",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", weight.shape[0]])],
        initializer=[
            numpy_helper.from_array(weight.astype(np.float32), "weight"),
            numpy_helper.from_array(bias.astype(np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime reads IR versions up to its own
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    return _onnx(tmp_path_factory.mktemp("model") / "pool_linear.onnx")


# --------------------------------------------------------------------------------------------
# embed_crops
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_known_crops_give_known_embeddings(kind, request, tmp_path):
    model = request.getfixturevalue(f"{kind}_model")
    store, index, crops = _write_store(tmp_path)
    # 7 crops in batches of 3: three model calls, the last one of a single crop.
    table = embed_crops(store, index, model, batch_size=3)
    assert list(table.columns) == [*CELL_KEYS, *(f"Cells_Embedding_{i:04d}" for i in range(4))]
    assert (table.dtypes.iloc[4:] == np.float32).all()
    keys = pd.read_parquet(index)[list(CELL_KEYS)]
    pd.testing.assert_frame_equal(table[list(CELL_KEYS)], keys)
    values = table.iloc[:, 4:].to_numpy()
    # Integer-valued means and weights: exact. Output 0 = 8i + 10 (8i + 1) + 100 (8i + 2).
    np.testing.assert_array_equal(values, _expected(crops))
    np.testing.assert_array_equal(values[:, 0], 888 * np.arange(N_CROPS) + 210)
    # Same answer whatever the batch size (no row dropped or repeated at batch edges).
    for batch_size in (1, N_CROPS, 256):
        again = embed_crops(store, index, model, batch_size=batch_size)
        pd.testing.assert_frame_equal(again, table)


def test_loaded_model_and_options(torchscript_model, tmp_path):
    store, index, crops = _write_store(tmp_path)
    model = load_model(torchscript_model, device="auto")
    assert model.format == "torchscript" and model.device in ("cpu", "cuda")
    # Channels in another order feed the model in that order; the mask can be one of them.
    table = embed_crops(store, index, model, channels=["AGP", "DNA", "mask"], prefix="Nuclei_E_")
    assert table.columns[4] == "Nuclei_E_0000"
    np.testing.assert_array_equal(table.iloc[:, 4:].to_numpy(), _expected(crops, (2, 0, 3)))
    with pytest.raises(EmbeddingError, match="'RNA'.*not in its channels"):
        embed_crops(store, index, model, channels=["RNA", "DNA", "GFP"])
    # Constant crops normalise to 0: only the bias is left.
    table = embed_crops(store, index, model, normalize="zscore")
    np.testing.assert_array_equal(table.iloc[:, 4:].to_numpy(), np.tile(BIAS, (N_CROPS, 1)))


def test_zero_crops_give_zero_rows_with_all_columns(torchscript_model, onnx_model, tmp_path):
    store, index, _ = _write_store(tmp_path, n=0)
    for model in (torchscript_model, onnx_model):
        output = tmp_path / f"{model.suffix}.parquet"
        table = embed_batch(store, index, model, output)
        assert len(table) == 0 and len(table.columns) == 4 + 4
        written = pd.read_parquet(output)
        assert list(written.columns) == list(table.columns)
        assert (written.dtypes.iloc[4:] == np.float32).all()


def test_normalize_crops():
    rng = np.random.default_rng(0)
    batch = rng.random((3, 2, 5, 5), dtype=np.float32) * 7 + 2
    batch[1, 1] = 4.0  # a constant crop-channel
    minmax = normalize_crops(batch, "minmax")
    assert minmax.dtype == np.float32
    np.testing.assert_allclose(minmax[0, 0].min(), 0, atol=1e-7)
    np.testing.assert_allclose(minmax[0, 0].max(), 1, atol=1e-6)
    zscore = normalize_crops(batch, "zscore")
    np.testing.assert_allclose(zscore[2, 0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(zscore[2, 0].std(), 1, atol=1e-5)
    assert not minmax[1, 1].any() and not zscore[1, 1].any()
    np.testing.assert_array_equal(normalize_crops(batch, "none"), batch)
    with pytest.raises(ValueError, match="unknown normalize"):
        normalize_crops(batch, "l2")


# --------------------------------------------------------------------------------------------
# Errors name the model
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
def test_bad_model_file_is_named(suffix, tmp_path):
    pytest.importorskip("torch" if suffix == ".pt" else "onnxruntime")
    bad = tmp_path / f"weights{suffix}"
    bad.write_bytes(b"this is no model\n" * 10)
    with pytest.raises(EmbeddingError, match=f"model {re.escape(str(bad))} is not"):
        load_model(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_model(tmp_path / "missing.pt")


def test_format_from_suffix_or_explicit(tmp_path):
    assert model_format("m.pth") == "torchscript"
    assert model_format("m.ONNX") == "onnx"
    assert model_format("m.bin", "onnx") == "onnx"
    with pytest.raises(EmbeddingError, match=r"m\.bin: cannot tell the format"):
        model_format("m.bin")
    with pytest.raises(EmbeddingError, match="unknown format 'keras'"):
        model_format("m.pt", "keras")


@pytest.mark.parametrize(
    ("forward", "shape"), [("rank3", r"\(3, 4, 1\)"), ("first_row", r"\(1, 4\)")]
)
def test_wrong_output_shape_is_refused(torch, forward, shape, tmp_path):
    path = _torchscript(torch, tmp_path / f"{forward}.pt", forward)
    store, index, _ = _write_store(tmp_path)
    named = re.escape(str(path))
    with pytest.raises(EmbeddingError, match=rf"model {named} returned shape {shape}.*\(N, D\)"):
        embed_crops(store, index, path, batch_size=3)


def test_model_that_fails_on_the_crops_is_named(onnx_model, tmp_path):
    # Two image channels where the model takes three.
    store, index, _ = _write_store(tmp_path, channels=("DNA", "GFP"))
    named = re.escape(str(onnx_model))
    with pytest.raises(EmbeddingError, match=f"model {named} failed on an input of shape"):
        embed_crops(store, index, onnx_model)


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

MINIMAL = {
    "channels": {"1": "DNA", "2": "GFP"},
    "plates": [{"name": "P1", "images": "i", "platemap": "m"}],
    "crops": {"enabled": True},
}


def _load(tmp_path, **changes):
    config = copy.deepcopy(MINIMAL)
    config.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def test_config_embedding_defaults_and_level(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    config = _load(tmp_path)
    assert config["features"]["embedding"]["model"] is None
    assert plate_level_versions(config, "P1", "embeddings") == []
    config = _load(tmp_path, features={"embedding": {"model": str(model)}})
    assert config["features"]["embedding"] == {
        "model": str(model),
        "format": None,
        "batch_size": 256,
        "device": "cpu",
        "channels": None,
        "normalize": "none",
        "prefix": "Cells_Embedding_",
    }
    assert plate_level_versions(config, "P1", "embeddings") == [main_version(config)]
    # DVC tracks the level (retention archive) only when it is built.
    tracked = {out.path: out.retention for out in tracked_outputs(config, tmp_path)}
    assert tracked[f"results/embeddings/{main_version(config)}/P1"] == "archive"
    config["features"]["embedding"]["model"] = None
    assert not any(out.level == "embeddings" for out in tracked_outputs(config, tmp_path))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"crops": {"enabled": False}}, "features.embedding needs crops.enabled"),
        ({"crops": {"enabled": True, "compartment": "cytoplasm"}}, "compartment cells or nuclei"),
        ({"embedding": {"model": "{tmp}/absent.pt"}}, "model: {tmp}/absent.pt is not a file"),
        ({"embedding": {"model": "https://example.org/m.onnx"}}, "never downloaded"),
        ({"embedding": {"model": "{tmp}/model.bin"}}, "cannot tell the format"),
        ({"embedding": {"channels": ["DNA", "RNA"]}}, r"\['RNA'\] are not crop channels"),
        ({"embedding": {"channels": ["DNA", "DNA"]}}, "listed twice"),
    ],
)
def test_config_embedding_errors(tmp_path, changes, message):
    (tmp_path / "model.onnx").write_bytes(b"")
    (tmp_path / "model.bin").write_bytes(b"")
    embedding = {"model": str(tmp_path / "model.onnx"), **changes.pop("embedding", {})}
    embedding["model"] = embedding["model"].format(tmp=tmp_path)
    with pytest.raises(ConfigError, match=message.format(tmp=tmp_path)):
        _load(tmp_path, features={"embedding": embedding}, **changes)


# --------------------------------------------------------------------------------------------
# Join onto the features
# --------------------------------------------------------------------------------------------


def _cells(n=4):
    return pd.DataFrame(
        {
            "Metadata_Plate": ["P1"] * n,
            "Metadata_Well": ["A01", "A01", "A02", "A02"][:n],
            "Metadata_Site": np.ones(n, np.int64),
            "Metadata_ObjectNumber": np.arange(1, n + 1, dtype=np.int64),
            "Cells_AreaShape_Area": np.arange(n, dtype=np.float32) + 10,
        }
    )


def test_embeddings_are_aggregated_with_the_features(tmp_path):
    features_dir, embeddings_dir = tmp_path / "features", tmp_path / "embeddings"
    features_dir.mkdir()
    embeddings_dir.mkdir()
    cells = _cells()
    cells.to_parquet(features_dir / "A01-A02.parquet", index=False)
    # Rows in another order than the features: the join goes by the keys.
    embedded = (
        cells[list(CELL_KEYS)].iloc[::-1].assign(Cells_Embedding_0000=np.float32([4, 3, 2, 1]))
    )
    embedded.to_parquet(embeddings_dir / "A01-A02.parquet", index=False)
    profiles = aggregate_features(
        [features_dir / "A01-A02.parquet"], embedding_paths=[embeddings_dir / "A01-A02.parquet"]
    ).profiles
    assert list(profiles["Cells_Embedding_0000"]) == [1.5, 3.5]
    assert list(profiles["Cells_AreaShape_Area"]) == [10.5, 12.5]
    # A cell without its embedding is a loud error naming the batch.
    embedded.iloc[1:].to_parquet(embeddings_dir / "A01-A02.parquet", index=False)
    with pytest.raises(ValueError, match="batch A01-A02 .*4 cells in the features, 3 embeddings"):
        aggregate_features(
            [features_dir / "A01-A02.parquet"],
            embedding_paths=[embeddings_dir / "A01-A02.parquet"],
        )
    with pytest.raises(ValueError, match="do not match the feature files"):
        aggregate_features(
            [features_dir / "A01-A02.parquet"], embedding_paths=[embeddings_dir / "B.parquet"]
        )


def test_embedding_rows_refuse_duplicates_and_shared_columns(tmp_path):
    cells = _cells()
    features, path = tmp_path / "B01.parquet", tmp_path / "e.parquet"
    cells.to_parquet(features)
    keys = cells[list(CELL_KEYS)]
    cells[list(CELL_KEYS)].iloc[[0, 0, 1, 2]].assign(Cells_Embedding_0000=1.0).to_parquet(path)
    with pytest.raises(ValueError, match="appear twice in the embeddings"):
        embedding_rows(keys, features, path)
    cells.to_parquet(path)
    with pytest.raises(ValueError, match="both have column"):
        embedding_rows(keys, features, path)


# --------------------------------------------------------------------------------------------
# Workflow
# --------------------------------------------------------------------------------------------


@pytest.mark.workflow
def test_workflow_embeds_crops_into_profiles(small_example, torchscript_model, tmp_path):
    config = example_config(small_example)
    assert config["crops"]["enabled"]
    config["features"] = {"embedding": {"model": str(torchscript_model), "batch_size": 64}}
    version = main_version(config)
    aggregated = f"results/profiles/{version}/SYN01/SYN01_aggregated.parquet"
    run_snakemake(tmp_path, config, targets=[aggregated])

    embedded = tmp_path / f"results/embeddings/{version}/SYN01"
    assert sorted(p.name for p in embedded.iterdir()) == ["A01-A06.parquet", "B01-B06.parquet"]
    embeddings = pd.concat(pd.read_parquet(p) for p in sorted(embedded.iterdir()))
    features = pd.concat(
        pd.read_parquet(p, columns=list(CELL_KEYS))
        for p in sorted((tmp_path / f"results/features/{version}/SYN01").iterdir())
    )
    pd.testing.assert_frame_equal(
        embeddings[list(CELL_KEYS)].sort_values(list(CELL_KEYS), ignore_index=True),
        features.sort_values(list(CELL_KEYS), ignore_index=True),
    )
    # The model saw the three image channels (not the mask) of the real crops.
    with h5py.File(tmp_path / f"results/crops/{version}/SYN01/A01-A06.h5", "r") as store:
        first = store["crops"][:5]
    got = pd.read_parquet(embedded / "A01-A06.parquet").iloc[:5, 4:].to_numpy()
    np.testing.assert_allclose(got, _expected(first), rtol=1e-5, atol=1e-5)

    profiles = pd.read_parquet(tmp_path / aggregated)
    columns = [f"Cells_Embedding_{i:04d}" for i in range(4)]
    assert set(columns) <= set(profiles.columns)
    medians = embeddings.groupby("Metadata_Well")[columns].median()
    np.testing.assert_allclose(
        profiles.set_index("Metadata_Well")[columns].to_numpy(),
        medians.loc[profiles["Metadata_Well"]].to_numpy(),
        rtol=1e-5,
    )
    record = yaml.safe_load(
        (tmp_path / f"results/provenance/SYN01/embed/{version}/A01-A06.json").read_text()
    )
    assert record["level"] == "embeddings"
    assert any(i["path"] == str(torchscript_model) for i in record["inputs"])
