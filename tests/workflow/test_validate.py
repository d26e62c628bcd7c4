"""Config schema: every key documented with a default; shipped configs validate."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO
from snakemake.exceptions import WorkflowError

from cellstrata.config import (
    SCHEMA_PATH,
    ConfigError,
)
from cellstrata.levels import (
    retention_of,
)
from cellstrata.workflow.validate import (
    load_config,
)

SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
MINIMAL = {"channels": {"1": "DNA"}, "plates": [{"name": "P1", "images": "i", "platemap": "m"}]}


def _properties(schema, path="config"):
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}.{key}", sub
        yield from _properties(sub, f"{path}.{key}")
        if isinstance(sub.get("items"), dict):
            yield from _properties(sub["items"], f"{path}.{key}[]")


def test_every_key_has_description_and_default():
    keys = list(_properties(SCHEMA))
    assert len(keys) > 40
    for path, sub in keys:
        assert sub.get("description"), f"{path} has no description"
        # Items of the plates list are required fields, so they carry no default.
        if "[]" not in path:
            assert "default" in sub, f"{path} has no default"


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(REPO)) for p in (REPO / "config").rglob("*.yaml"))
)
def test_shipped_configs_validate(path):
    config = load_config(REPO / path)
    assert config["plates"]


def _write(tmp_path, config):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_defaults_are_filled(tmp_path):
    config = load_config(_write(tmp_path, MINIMAL))
    assert config["batching"]["wells_per_job"] == 4
    assert config["retention"]["default"] == "keep"
    assert retention_of(config["retention"], "corrected") == "delete"
    assert retention_of(config["retention"], "masks") == "archive"
    assert retention_of(config["retention"], "manifest") == "keep"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": {"pattern": r"(?P<well>\w+)\.tif"}}, "group 'channel'"),
        ({"images": {"pattern": r"(?P<channel>\w+)\.tif"}}, "'well', or both"),
        ({"images": {"pattern": r"(?P<channel>[\w+\.tif"}}, "not a valid regular expression"),
        ({"channels": {"1": "DNA", "2": "DNA"}}, "used twice"),
        ({"segmentation": {"cell_channel": "AGP"}}, "cell_channel 'AGP' is not a channel"),
        (
            {"segmentation": {"extra_versions": [{"nuclei": {"diameterr": 3}}]}},
            "unknown nuclei_params key",
        ),
        ({"platemap": {"well_column": None}}, "row_column and column_column"),
    ],
)
def test_semantic_errors(tmp_path, change, message):
    config = copy.deepcopy(MINIMAL)
    config.update(change)
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, config))


@pytest.mark.parametrize(
    "change",
    [
        {"plates": [{"name": "bad name; rm -rf", "images": "i", "platemap": "m"}]},
        {"plates": [{"name": "../escape", "images": "i", "platemap": "m"}]},
        {"retention": {"levels": {"raw": "delete"}}},
        {"retention": {"levels": {"profiles": "delete"}}},
        {"retention": {"levels": {"everything": "keep"}}},
        {"batching": {"wells_per_job": 0}},
        {"unknown_key": 1},
    ],
)
def test_schema_rejects(tmp_path, change):
    config = copy.deepcopy(MINIMAL)
    config.update(change)
    with pytest.raises(WorkflowError):
        load_config(_write(tmp_path, config))


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"groups": ["AreaShape", "Sharpness"]}, "unknown feature group"),
        ({"options": {"AreaShape": {"scales": [3]}}}, "AreaShape: unknown option"),
    ],
)
def test_feature_set_is_checked(tmp_path, features, message):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["features"] = features
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_cells_method_default_makes_a_new_version_and_watershed_keeps_its_old_one(tmp_path):
    """Propagation became the default cells method: configs taking the default get a new
    segmentation version, one that names the watershed keeps the version it had before."""
    from cellstrata.segment.versions import segmentation_versions

    def version(cells=None, cytoplasm=None):
        config = yaml.safe_load((REPO / "config/config.yaml").read_text())
        if cells is not None:
            config["segmentation"]["cells"] = cells
        if cytoplasm is not None:
            config["segmentation"]["cytoplasm"] = cytoplasm
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return next(iter(segmentation_versions(load_config(path))))

    watershed = {"max_distance": 30, "method": "watershed"}
    assert version(watershed) == "classical-42f9603c"  # the version the README once showed
    assert version() == version({"max_distance": 30, "method": "propagation"})
    assert version() != "classical-42f9603c"
    assert version(cytoplasm={"shrink_nuclei": False}) == version()
    assert version(cytoplasm={"shrink_nuclei": True}) != version()
    # The cells' remove_border is a parameter of the version; left out, the version is as it was.
    border = {"max_distance": 30, "remove_border": True}
    assert version(border) != version({"max_distance": 30})
    assert version({"max_distance": 30}) == version()
