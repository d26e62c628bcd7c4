"""Report figures: every function renders a readable PNG from tiny synthetic tables and images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from matplotlib import colors
from matplotlib.figure import Figure
from matplotlib.image import imread

from cellstrata.io import write_labels, write_tiff
from cellstrata.report import experiment as report_experiment
from cellstrata.report import figures as report_figures
from cellstrata.report import images as report_images
from cellstrata.report import plate as report_plate


def _png(figure: Figure, path) -> np.ndarray:
    """Save ``figure`` and read the PNG back, checking it is a real, non-flat image."""
    report_figures.save_figure(figure, path)
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4), pixels.shape
    assert pixels.shape[0] > 150 and pixels.shape[1] > 300, pixels.shape
    assert pixels[..., :3].std() > 0
    return pixels


def _texts(figure: Figure) -> str:
    """Every text of a figure (titles, labels, annotations, legends), drawn first."""
    figure.canvas.draw()
    found = [t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text"))]
    return "\n".join(found)


def _wells(rows: str, columns: range) -> list[str]:
    return [f"{r}{c:02d}" for r in rows for c in columns]


# --- plate maps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("well", "position"), [("A01", (0, 0)), ("b3", (1, 2)), ("P24", (15, 23)), ("AF48", (31, 47))]
)
def test_well_position(well, position):
    assert report_plate.well_position(well) == position


@pytest.mark.parametrize(
    ("wells", "fmt"),
    [(["A01", "H12"], 96), (["A01", "P24"], 384), (["I13"], 384), (["A01", "Q01"], 1536), ([], 96)],
)
def test_plate_format_is_the_smallest_that_fits(wells, fmt):
    assert report_plate.plate_format_of(wells) == fmt


def test_plate_format_refuses_wells_outside_it():
    with pytest.raises(ValueError, match="P24"):
        report_plate.plate_format_of(["A01", "P24"], 96)
    with pytest.raises(ValueError, match="plate_format"):
        report_plate.plate_format_of(["A01"], 100)


def plate_heatmap(
    table: pd.DataFrame,
    value: str,
    *,
    title: str,
    label: str | None = None,
    plate_format: int | None = None,
) -> Figure:
    """One plate as a grid of wells coloured by ``value``: a single panel of the plate overview's
    drawing code, to test it well by well (the workflow draws only whole overviews)."""
    fmt = report_plate.plate_format_of(list(table["Metadata_Well"].astype(str)), plate_format)
    figure = report_plate._plate_figure(fmt, 1, 1)
    report_plate._draw_plate(
        figure.add_subplot(), table, value, title=title, label=label, plate_format=fmt
    )
    return figure


def test_plate_heatmap_96(tmp_path):
    table = pd.DataFrame({"Metadata_Well": ["A01", "B03", "H12"], "cells": [10, 250, 40]})
    figure = plate_heatmap(table, "cells", title="Cells", label="cells per well")
    grid = figure.axes[0].images[0].get_array()
    assert grid.shape == (8, 12)
    assert grid[1, 2] == 250 and grid[7, 11] == 40
    # Unimaged wells are masked, so the hatched background shows through.
    assert grid.mask.sum() == 96 - 3
    assert figure.axes[0].get_xticklabels()[0].get_text() == "1"
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == list("ABCDEFGH")
    assert "cells per well" in _texts(figure)
    pixels = _png(figure, tmp_path / "plate.png")
    assert pixels.shape[1] > pixels.shape[0]  # a plate is wider than tall


def test_plate_heatmap_grows_to_384_and_1536(tmp_path):
    table = pd.DataFrame({"Metadata_Well": ["A01", "P24"], "Metadata_value": [1.5, -2.0]})
    figure = plate_heatmap(table, "value", title="384")  # prefix optional
    assert figure.axes[0].images[0].get_array().shape == (16, 24)
    _png(figure, tmp_path / "384.png")
    table = pd.DataFrame({"Metadata_Well": ["AF48"], "v": [1.0]})
    figure = plate_heatmap(table, "v", title="1536")
    assert figure.axes[0].images[0].get_array().shape == (32, 48)
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels[0] == "A" and labels[-1] == "AE"  # every other row on 1536-well plates
    # An explicit format is kept even when a smaller one would do.
    table = pd.DataFrame({"Metadata_Well": ["A01"], "v": [1.0]})
    figure = plate_heatmap(table, "v", title="x", plate_format=384)
    assert figure.axes[0].images[0].get_array().shape == (16, 24)


def test_plate_heatmap_booleans(tmp_path):
    table = pd.DataFrame({"Metadata_Well": ["A01", "A02", "C05"], "Flag_Any": [True, False, True]})
    figure = plate_heatmap(table, "Flag_Any", title="Flagged sites")
    grid = figure.axes[0].images[0].get_array()
    assert grid[0, 0] == 1 and grid[0, 1] == 0 and grid[2, 4] == 1
    assert "yes" in _texts(figure)
    _png(figure, tmp_path / "flags.png")


def test_plate_heatmap_refuses_duplicates_and_text():
    twice = pd.DataFrame({"Metadata_Well": ["A01", "A01"], "cells": [1, 2]})
    with pytest.raises(ValueError, match="A01"):
        plate_heatmap(twice, "cells", title="x")
    text = pd.DataFrame({"Metadata_Well": ["A01"], "cells": ["many"]})
    with pytest.raises(TypeError):
        plate_heatmap(text, "cells", title="x")


def _cell_counts(plate: str = "P1") -> pd.DataFrame:
    wells = _wells("ABC", range(1, 7))
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "Metadata_Plate": plate,
            "Metadata_Well": wells,
            "Metadata_treatment": ["DMSO", "drug"] * (len(wells) // 2),
            "cells": rng.integers(20, 80, len(wells)),
            "Metadata_cqc_large_nuclei": rng.integers(0, 5, len(wells)),
            "Metadata_cqc_excluded": 0,
        }
    )


def test_plate_overview(tmp_path):
    counts = _cell_counts()
    readout = pd.Series(np.linspace(0, 1, len(counts)), index=counts.index, name="Cells_Area")
    figure = report_plate.plate_overview(counts, readout=readout, flag_columns=["cqc_large_nuclei"])
    plates = [ax for ax in figure.axes if ax.images]
    assert len(plates) == 3
    assert all(ax.images[0].get_array().shape == (8, 12) for ax in plates)
    flagged = plates[1].images[0].get_array()
    assert flagged[0, 0] == counts["Metadata_cqc_large_nuclei"].iloc[0]
    text = _texts(figure)
    assert "Plate P1" in text and "large nuclei" in text and "Cells Area" in text
    _png(figure, tmp_path / "overview.png")


def test_plate_overview_refuses_two_plates():
    counts = pd.concat([_cell_counts("P1"), _cell_counts("P2")], ignore_index=True)
    with pytest.raises(ValueError):
        report_plate.plate_overview(counts)


# --- images ----------------------------------------------------------------------------------


def test_illumination_figure(tmp_path):
    yy, xx = np.mgrid[:1100, :1000]
    dome = (2.0 - ((yy - 550) ** 2 + (xx - 500) ** 2) / 550**2).astype(np.float32)
    functions = {"DNA": dome, "AGP": np.ones((1100, 1000), np.float32)}
    figure = report_images.illumination_figure(functions, plate="P1", modes={"DNA": "regular"})
    images = [ax.images[0] for ax in figure.axes if ax.images]
    assert len(images) == 2
    # Large functions are reduced before drawing, keeping the extent in full-image pixels.
    assert max(images[0].get_array().shape) <= 512
    assert images[0].get_extent() == [0, 1000, 1100, 0]
    text = _texts(figure)
    assert "DNA (regular)" in text and f"min {dome.min():.3g}" in text and "max 2" in text
    assert "Illumination functions, plate P1" in text
    _png(figure, tmp_path / "illumination.png")


def _site(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(100, 200, (96, 128)).astype(np.uint16)
    nuclei = np.zeros(image.shape, np.uint16)
    cells = np.zeros(image.shape, np.uint16)
    for label, (y, x) in enumerate([(30, 30), (60, 90)], start=1):
        cells[y - 15 : y + 15, x - 15 : x + 15] = label
        nuclei[y - 6 : y + 6, x - 6 : x + 6] = label
        image[y - 6 : y + 6, x - 6 : x + 6] += 3000
    return image, nuclei, cells


def test_overlay_figure(tmp_path):
    image, nuclei, cells = _site()
    figure = report_images.overlay_figure(
        [("A01 site 1", image, nuclei, cells), ("A02 site 1", image.astype(float), nuclei, None)]
    )
    shown = [ax.images[0].get_array() for ax in figure.axes if ax.images]
    assert len(shown) == 2
    for rgb, has_cells in zip(shown, (True, False), strict=True):
        assert rgb.shape == (*image.shape, 3)
        nuclei_px = np.all(np.isclose(rgb, colors.to_rgb(report_figures.NUCLEI_OUTLINE)), axis=2)
        cell_px = np.all(np.isclose(rgb, colors.to_rgb(report_figures.CELL_OUTLINE)), axis=2)
        assert nuclei_px.sum() == 2 * 4 * 11  # two 12x12 squares, inner outline
        assert (cell_px.sum() > 0) == has_cells
    text = _texts(figure)
    assert "2 nuclei, 2 cells" in text and "no cell mask" in text
    _png(figure, tmp_path / "overlays.png")


def test_overlay_figure_refuses_mismatched_masks():
    image, nuclei, _ = _site()
    with pytest.raises(ValueError, match="A01"):
        report_images.overlay_figure([("A01", image, nuclei[:50], None)])


# --- image QC --------------------------------------------------------------------------------


def _image_qc(plate: str = "P1") -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = [
        {"Metadata_Plate": plate, "Metadata_Well": w, "Metadata_Site": s, "channel": c}
        for w in ("A01", "A02", "B01")
        for s in (1, 2, 3)
        for c in ("DNA", "AGP")
    ]
    table = pd.DataFrame(rows)
    table["ImageQuality_PowerLogLogSlope"] = rng.normal(-1.6, 0.1, len(table))
    table["ImageQuality_FocusScore"] = rng.normal(0.01, 0.002, len(table))
    table["ImageQuality_PercentMaximal"] = 0.0
    table["Flag_Any"] = table["Metadata_Well"].eq("A02") & table["Metadata_Site"].eq(2)
    return table


def test_qc_distributions(tmp_path):
    table = _image_qc()
    figure = report_images.qc_distributions(
        table, metrics=("PowerLogLogSlope", "ImageQuality_FocusScore", "ImageQuality_Missing")
    )
    assert len(figure.axes) == 2 * 2  # missing metric skipped; 2 channels
    assert [ax.get_title() for ax in figure.axes[:2]] == ["DNA", "AGP"]
    red = colors.to_rgba(report_figures.FLAGGED)
    flagged_bars = [
        p for ax in figure.axes for p in ax.patches if p.get_facecolor() == red and p.get_height()
    ]
    assert flagged_bars  # the flagged site's images are drawn in red
    assert "1 of 9 sites flagged" in _texts(figure)
    _png(figure, tmp_path / "qc.png")


def test_qc_distributions_without_metrics_is_a_note(tmp_path):
    table = _image_qc()[["Metadata_Plate", "Metadata_Well", "channel"]]
    figure = report_images.qc_distributions(table)
    assert "No image QC metric" in _texts(figure)
    _png(figure, tmp_path / "note.png")


# --- profiles --------------------------------------------------------------------------------


def _profiles(n_per_dose: int = 3, plates: tuple[str, ...] = ("P1",)) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    doses = [0.0, 0.01, 0.1, 1.0, 10.0]
    rows = []
    for plate in plates:
        for dose in doses:
            for replicate in range(n_per_dose):
                rows.append(
                    {
                        "Metadata_Plate": plate,
                        "Metadata_Well": f"{'ABCDEFGH'[replicate]}{doses.index(dose) + 1:02d}",
                        "Metadata_treatment": "DMSO" if dose == 0 else "drug",
                        "Metadata_dose": dose,
                        "Metadata_Object_Count": int(rng.integers(40, 60)),
                    }
                )
    table = pd.DataFrame(rows)
    signal = np.log10(table["Metadata_dose"] + 0.001)
    for i in range(6):
        table[f"Cells_Feature_{i}"] = signal * (i % 3) + rng.normal(0, 0.3, len(table))
    table["Nuclei_Flat"] = 1.0  # no variance: left out of the PCA
    return table


def test_dose_response_log_axis_with_zero(tmp_path):
    profiles = _profiles()
    figure = report_experiment.dose_response(
        profiles,
        dose_column="dose",
        values=profiles["Metadata_Object_Count"],
        label="cells per well",
        group_column="treatment",
    )
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    figure.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "0" and "10" in ticks
    zero = ax.get_xticks()[0]
    assert 0 < zero < 0.01  # dose 0 sits left of the smallest dose
    points = ax.collections[0].get_offsets()  # DMSO wells
    assert np.allclose(points[:, 0], zero)
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"DMSO", "drug"}
    # One median line per group: DMSO (one dose), drug (four doses).
    medians = [line for line in ax.lines if line.get_label() in {"DMSO", "drug"}]
    assert sorted(len(line.get_xdata()) for line in medians) == [1, 4]
    _png(figure, tmp_path / "dose.png")


def test_dose_response_linear_within_a_decade(tmp_path):
    profiles = _profiles()
    profiles["Metadata_dose"] = profiles["Metadata_dose"].clip(upper=0.1) + 1  # 1 .. 1.1
    figure = report_experiment.dose_response(
        profiles, dose_column="Metadata_dose", values="Object_Count", label="cells"
    )
    assert figure.axes[0].get_xscale() == "linear"
    _png(figure, tmp_path / "dose_linear.png")


def test_pca_figure_categorical_and_numeric(tmp_path):
    profiles = _profiles(plates=("P1", "P2"))
    profiles["Cells_Huge"] = np.where(profiles["Metadata_dose"] > 1, 1e18, 0.0)  # MAD ~ 0
    profiles.loc[0, "Cells_Feature_5"] = np.nan
    figure = report_experiment.pca_figure(profiles, color_by="treatment")
    ax = figure.axes[0]
    assert "% of variance" in ax.get_xlabel() and ax.get_xlabel().startswith("PC1")
    # Feature_5 (NaN), Flat (no variance) and Huge (1e18) are left out.
    assert "30 wells, 5 features" in ax.get_title() and "3 feature(s) left out" in ax.get_title()
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert legend == {"DMSO", "drug", "plate P1", "plate P2"}
    markers = {tuple(c.get_paths()[0].vertices.shape) for c in ax.collections}
    assert len(markers) == 2  # a marker per plate
    _png(figure, tmp_path / "pca.png")

    figure = report_experiment.pca_figure(profiles, color_by="Metadata_dose")
    assert len(figure.axes) == 2  # plot and colour bar
    assert figure.axes[1].get_ylabel() == "dose"
    _png(figure, tmp_path / "pca_numeric.png")


def test_pca_figure_notes(tmp_path):
    profiles = _profiles()
    figure = report_experiment.pca_figure(profiles.head(2), color_by="treatment")
    assert "at least 3" in _texts(figure)
    _png(figure, tmp_path / "pca_two_wells.png")
    figure = report_experiment.pca_figure(
        profiles[["Metadata_treatment", "Nuclei_Flat"]], color_by="treatment"
    )
    assert "0 usable feature(s)" in _texts(figure)
    figure = report_experiment.pca_figure(profiles[["Metadata_treatment"]], color_by="treatment")
    assert "No PCA drawn" in _texts(figure)


def _map_table() -> pd.DataFrame:
    rows = []
    for kind in ("consistency", "activity"):
        for dose, value in zip((0.01, 0.1, 1.0, 10.0), (0.2, 0.5, 0.8, 0.95), strict=True):
            rows.append(
                {
                    "Metadata_treatment": "drug",
                    "Metadata_dose": dose,
                    "n_wells": 3,
                    "mean_average_precision": value if kind == "activity" else value / 2,
                    "p_value": 0.01,
                    "corrected_p_value": 0.02,
                    "below_corrected_p": value > 0.6,
                    "kind": kind,
                }
            )
    return pd.DataFrame(rows)


def test_map_bars(tmp_path):
    figure = report_experiment.map_bars(_map_table(), label_columns=["treatment", "Metadata_dose"])
    assert len(figure.axes) == 2
    activity, consistency = figure.axes
    assert activity.get_title().startswith("Activity: 2 of 4 significant")
    assert consistency.get_title().startswith("Consistency")
    assert activity.get_xlim() == (0, 1)
    bars = activity.patches
    assert len(bars) == 4
    top = max(bars, key=lambda bar: bar.get_y())
    assert top.get_width() == pytest.approx(0.95)  # sorted: highest mAP on top
    assert top.get_facecolor() == colors.to_rgba(report_figures.SIGNIFICANT)
    labels = dict(zip(activity.get_yticks(), activity.get_yticklabels(), strict=True))
    assert labels[max(labels)].get_text() == "drug, 10"
    _png(figure, tmp_path / "map.png")


def test_map_bars_empty_is_a_note(tmp_path):
    figure = report_experiment.map_bars(_map_table().iloc[:0], label_columns=["treatment"])
    assert "empty" in _texts(figure)
    _png(figure, tmp_path / "map_empty.png")


# --- Snakemake entry points ------------------------------------------------------------------


def _plate_files(tmp_path):
    counts = pd.concat([_cell_counts("P1"), _cell_counts("P2")], ignore_index=True)
    counts.to_parquet(tmp_path / "cell_counts.parquet")
    _image_qc("P1").to_parquet(tmp_path / "qc.parquet")
    yy, xx = np.mgrid[:64, :64]
    write_tiff(tmp_path / "DNA.tiff", (1 + xx / 64).astype(np.float32), {"mode": "regular"})
    write_tiff(tmp_path / "AGP.tiff", (yy / 640).astype(np.float32), {"mode": "background"})
    image, nuclei, cells = _site()
    tifffile.imwrite(tmp_path / "A01_s1.tif", image)
    write_labels(tmp_path / "A01_s1_nuclei.tiff", nuclei)
    write_labels(tmp_path / "A01_s1_cells.tiff", cells)
    profiles = _profiles()
    profiles["Metadata_Plate"] = "P1"
    profiles.to_parquet(tmp_path / "profiles.parquet")
    return {
        "plate": "P1",
        "cell_counts_path": tmp_path / "cell_counts.parquet",
        "image_qc_path": tmp_path / "qc.parquet",
        "illumination_paths": {"DNA": tmp_path / "DNA.tiff", "AGP": tmp_path / "AGP.tiff"},
        "sample_sites": [
            {
                "title": "A01 site 1",
                "image": tmp_path / "A01_s1.tif",
                "nuclei": tmp_path / "A01_s1_nuclei.tiff",
                "cells": tmp_path / "A01_s1_cells.tiff",
            },
            {
                "title": "A01 site 1, nuclei only",
                "image": tmp_path / "A01_s1.tif",
                "nuclei": tmp_path / "A01_s1_nuclei.tiff",
                "cells": None,
            },
        ],
    }


def _capture(monkeypatch) -> dict[str, Figure]:
    """Keep the figures the writers save, by output file name, and still write them."""
    saved: dict[str, Figure] = {}
    save = report_figures.save_figure

    def keep(figure, path, **kwargs):
        saved[str(path).rsplit("/", 1)[-1]] = figure
        save(figure, path, **kwargs)

    # Each writer saves through the save_figure its own module imported.
    monkeypatch.setattr(report_plate, "save_figure", keep)
    monkeypatch.setattr(report_experiment, "save_figure", keep)
    return saved


def test_write_plate_figures(tmp_path, monkeypatch):
    saved = _capture(monkeypatch)
    outputs = {name: tmp_path / "figures" / f"{name}.png" for name in report_plate.PLATE_FIGURES}
    report_plate.write_plate_figures(
        **_plate_files(tmp_path),
        outputs=outputs,
        readout={"feature": "Cells_Feature_1", "divide_by": "Object_Count"},
        profiles_path=tmp_path / "profiles.parquet",
    )
    for path in outputs.values():
        _png_file(path)
    # Cells, one flag condition (cqc_excluded left out), the readout; only plate P1's wells.
    overview = [ax for ax in saved["overview.png"].axes if ax.images]
    assert len(overview) == 3
    assert "Cells Feature 1 / Object Count" in overview[2].get_title()
    assert np.ma.count(overview[0].images[0].get_array()) == 18
    assert np.ma.count(overview[2].images[0].get_array()) == 15  # wells with a profile
    text = _texts(saved["illumination.png"])
    assert "DNA (regular)" in text and "AGP (background)" in text
    assert len([ax for ax in saved["overlays.png"].axes if ax.images]) == 2
    assert "1 of 9 sites flagged" in _texts(saved["qc.png"])


def test_write_plate_figures_cellprofiler_plate(tmp_path, monkeypatch):
    saved = _capture(monkeypatch)
    files = _plate_files(tmp_path)
    files["image_qc_path"] = None
    report_plate.write_plate_figures(**files, outputs={"qc": tmp_path / "qc.png"})
    assert "No image QC" in _texts(saved["qc.png"])
    assert list(saved) == ["qc.png"]  # only the figures named are drawn
    with pytest.raises(ValueError, match="unknown figure"):
        report_plate.write_plate_figures(**files, outputs={"pca": tmp_path / "pca.png"})


def _png_file(path) -> None:
    pixels = imread(path)
    assert pixels.shape[0] > 150 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0


def test_write_experiment_figures(tmp_path, monkeypatch):
    saved = _capture(monkeypatch)
    profiles = _profiles(plates=("P1", "P2"))
    profiles.to_parquet(tmp_path / "profiles.parquet")
    per_plate = _map_table().assign(Metadata_Plate="P1")
    combined = _map_table().head(3).assign(Metadata_Plate="all")
    pd.concat([per_plate, combined], ignore_index=True).to_parquet(tmp_path / "map.parquet")
    outputs = {name: tmp_path / f"{name}.png" for name in report_experiment.EXPERIMENT_FIGURES}
    report_experiment.write_experiment_figures(
        profiles_path=tmp_path / "profiles.parquet",
        map_path=tmp_path / "map.parquet",
        outputs=outputs,
        color_by="treatment",
        dose_column="dose",
        group_column="treatment",
    )
    for path in outputs.values():
        _png_file(path)
    assert "30 wells" in saved["pca.png"].axes[0].get_title()
    # The "all" rows only: 3 bars, consistency only (head(3) of the table).
    assert [len(ax.patches) for ax in saved["map.png"].axes] == [3]
    dose = saved["dose_response.png"].axes[0]
    assert dose.get_ylabel() == "cells per well"
    assert dose.get_xscale() == "log"


def test_write_experiment_figures_readout_and_no_dose(tmp_path, monkeypatch):
    saved = _capture(monkeypatch)
    paths = []
    for plate in ("P1", "P2"):
        paths.append(tmp_path / f"{plate}.parquet")
        _profiles(plates=(plate,)).to_parquet(paths[-1])
    report_experiment.write_experiment_figures(
        profiles_path=paths,
        map_path=None,
        outputs={"dose_response": tmp_path / "dose.png", "map": tmp_path / "map.png"},
        color_by="treatment",
        dose_column="Metadata_dose",
        readout={"feature": "Cells_Feature_1", "divide_by": None},
    )
    assert saved["dose.png"].axes[0].get_ylabel() == "Cells Feature 1"
    assert len(saved["dose.png"].axes[0].collections[0].get_offsets()) == 30  # both plates
    assert "No mAP" in _texts(saved["map.png"])
    # The readout's assay quality is written under the dose response.
    from cellstrata.profiles.quality import zprime_table

    profiles = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    profiles["Metadata_control_type"] = np.where(
        profiles["Metadata_dose"] == 0,
        "negative",
        np.where(profiles.index % 5 == 1, "positive", ""),
    )
    table = zprime_table(profiles, feature="Cells_Feature_1")
    table.to_parquet(tmp_path / "zprime.parquet")
    report_experiment.write_experiment_figures(
        profiles_path=paths,
        map_path=None,
        outputs={"dose_response": tmp_path / "quality.png"},
        color_by="treatment",
        dose_column="Metadata_dose",
        readout={"feature": "Cells_Feature_1", "divide_by": None},
        zprime_path=tmp_path / "zprime.parquet",
    )
    note = report_experiment.assay_quality_note(table)
    assert note.count("plate ") == len(table) and "robust Z'" in note and "SSMD" in note
    assert f"Z' {table['zprime'].iloc[0]:.2f} [" in note
    assert note.splitlines()[1] in _texts(saved["quality.png"])
    report_experiment.write_experiment_figures(
        profiles_path=paths,
        map_path=None,
        outputs={"dose_response": tmp_path / "none.png"},
        color_by="treatment",
    )
    assert "No dose column" in _texts(saved["none.png"])
