"""The whole chain on a real plate: BBBC013 (FKHR-GFP translocation dose response)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import REPO, benchmark, main_version, run_snakemake, shared
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr

from cellstrata.profiles.quality import zprime

pytestmark = [pytest.mark.realdata, pytest.mark.workflow]


@pytest.fixture(scope="module")
def bbbc013_run(tmp_path_factory):
    data = shared("bbbc013_translocation")
    config = yaml.safe_load((REPO / "config/examples/bbbc013.yaml").read_text())
    config["plates"][0]["images"] = str(data)
    config["plates"][0]["platemap"] = str(data / "1049_Metadata.csv")
    workdir = tmp_path_factory.mktemp("bbbc013")
    run_snakemake(workdir, config)
    return workdir / "results/profiles" / main_version(config) / "BBBC013"


def test_bbbc013_dose_response_and_zprime(bbbc013_run):
    results = bbbc013_run
    for step in ("aggregated", "annotated", "normalized", "feature_selected"):
        assert len(pd.read_parquet(results / f"BBBC013_{step}.parquet")) == 48
    profiles = pd.read_parquet(results / "BBBC013_annotated.parquet")
    ratio = (
        profiles["Nuclei_Intensity_MeanIntensity_GFP"]
        / profiles["Cytoplasm_Intensity_MeanIntensity_GFP"]
    )
    dose = profiles["Metadata_SBS_Doses"]
    by_dose = ratio.groupby(dose).mean()
    rho = spearmanr(dose, ratio).statistic
    control = profiles["Metadata_control_type"]
    z = zprime(ratio[control == "positive"], ratio[control == "negative"])
    print(f"\nBBBC013 nuclear/cytoplasmic GFP by dose: {by_dose.round(2).to_dict()}")
    print(f"BBBC013 Spearman(dose, ratio) = {rho:.3f}; Z' = {z:.3f}")
    assert rho > 0.85
    assert by_dose.loc[9] > 2 * by_dose.loc[0]
    assert by_dose.loc[[0, 1, 2]].max() < by_dose.loc[[7, 8, 9]].min()
    assert z >= 0.8


def test_bbbc013_quality_tables(bbbc013_run):
    """The configured readout's Z' and the mAP of the doses against the negative controls."""
    experiment = bbbc013_run.parents[2] / "experiment" / bbbc013_run.parent.name
    zprime = pd.read_parquet(experiment / "zprime.parquet").set_index("Metadata_Plate")
    mAP = pd.read_parquet(experiment / "map.parquet")
    activity = mAP[mAP["kind"] == "activity"].set_index("Metadata_SBS_Doses")
    z = zprime.loc["BBBC013", "zprime"]
    print(f"\nBBBC013 Z' of {zprime.loc['BBBC013', 'readout']}: {z:.3f}")
    print(f"BBBC013 activity mAP by dose: {activity['mean_average_precision'].round(3).to_dict()}")
    print(f"significant doses: {sorted(activity.index[activity['below_corrected_p']])}")
    # The issue asks for 0.9 (0.918 here, see README: 4 positive wells only).
    assert z >= 0.9
    # Doses 8 and 9 and the positive control (10) are retrieved perfectly among the controls.
    assert activity.loc[[8, 9, 10], "mean_average_precision"].min() > 0.95
    assert activity.loc[[8, 9, 10], "below_corrected_p"].all()
    assert activity.loc[1, "mean_average_precision"] < 0.8
    counts = pd.read_parquet(experiment / "cell_counts.parquet")
    assert len(counts) == 48


@pytest.fixture(scope="module")
def bbbc013_cells(bbbc013_run):
    """The readout selection benchmark and the run's single cells it selects on (computed once:
    the rings are remeasured on every site)."""
    selection = benchmark("readout_selection")
    profiles = pd.read_parquet(bbbc013_run / "BBBC013_annotated.parquet")
    workspace, version = bbbc013_run.parents[3], bbbc013_run.parent.name
    return selection, profiles, selection.single_cells(workspace, version, profiles)


def _configured_ring(config: dict) -> dict:
    options = (config.get("features") or {}).get("options") or {}
    return {"gap": 2, "width": 5, **options.get("Translocation", {})}


def test_bbbc013_remeasured_rings_are_the_workflows(bbbc013_cells):
    """The benchmark's core and ring of the configured geometry, and its nucleus and cytoplasm
    means, give the workflow's own well medians."""
    selection, profiles, cells = bbbc013_cells
    config = yaml.safe_load((REPO / "config/examples/bbbc013.yaml").read_text())
    ring = _configured_ring(config)
    medians = cells.groupby("Metadata_Well").median(numeric_only=True)
    wells = profiles.set_index("Metadata_Well")
    pairs = [
        ("Core", "Nuclei_Translocation_CoreMean_GFP"),
        (f"Ring_{ring['gap']}_{ring['width']}", "Nuclei_Translocation_RingMean_GFP"),
        (selection.NUCLEUS, selection.NUCLEUS),
        (selection.CYTOPLASM, selection.CYTOPLASM),
    ]
    for ours, theirs in pairs:
        np.testing.assert_allclose(
            medians.loc[wells.index, ours], wells[theirs], rtol=1e-5, err_msg=ours
        )


def test_bbbc013_readout_chosen_out_of_sample(bbbc013_cells):
    """The configured readout is the one benchmarks/readout_selection.py picks among its
    candidates named beforehand, and its leave-one-row-out figures (pooled held-out control
    wells, Z' once) are the headline."""
    selection, _, cells = bbbc013_cells
    figures, folds = selection.leave_one_row_out(cells, selection.CANDIDATES)
    chosen, threshold, _ = selection.best_readout(
        cells, selection.CANDIDATES, selection.control_wells(cells)
    )
    in_sample = selection.in_sample(cells, chosen, threshold)
    for fold in folds:
        print(f"\nheld-out row {fold['row']}: {fold['readout']} ({fold['train_zprime']:.3f})")
    print(
        f"BBBC013 out of sample: Z' {figures['zprime']:.3f}, robust Z' "
        f"{figures['robust_zprime']:.3f}, SSMD {figures['ssmd']:.2f}; in sample ({chosen}): "
        f"Z' {in_sample['zprime']:.3f}, robust Z' {in_sample['robust_zprime']:.3f}, SSMD "
        f"{in_sample['ssmd']:.2f}"
    )
    columns = selection.column_medians(cells, chosen, threshold)
    print(f"control-column medians: {columns.round(3).to_dict()}")
    settings = selection.workflow_settings(selection.CANDIDATES[chosen])
    assert settings is not None, f"{chosen} is no readout the workflow has"
    config = yaml.safe_load((REPO / "config/examples/bbbc013.yaml").read_text())
    assert {"transform": None, **config["quality"]["readout"]} == settings["readout"]
    if settings["translocation"] is not None:
        assert _configured_ring(config) == {**_configured_ring({}), **settings["translocation"]}
    assert [fold["row"] for fold in folds] == ["A", "B", "C", "D"]
    assert figures["zprime"] >= 0.85


def test_bbbc013_cell_counts_plausible(bbbc013_run):
    # SOURCES.md: about 190 nuclei per image.
    counts = pd.read_parquet(bbbc013_run / "BBBC013_aggregated.parquet")["Metadata_Object_Count"]
    print(
        f"\nBBBC013 cells per well: median {counts.median():.0f}, range {counts.min()}-"
        f"{counts.max()}"
    )
    assert 120 < counts.median() < 260


@pytest.fixture(scope="module")
def nf1_run(tmp_path_factory):
    """The workflow on the NF1 plate with config/examples/nf1.yaml: its workspace and config."""
    data = shared("nf1_cellpainting_plate2")
    config = yaml.safe_load((REPO / "config/examples/nf1.yaml").read_text())
    config["plates"][0]["images"] = str(data / "Plate_2_images")
    config["plates"][0]["platemap"] = str(data / "platemap_NF1_plate2.csv")
    workdir = tmp_path_factory.mktemp("nf1")
    run_snakemake(workdir, config)
    return workdir, config


def test_nf1_plate_runs_through(nf1_run):
    workdir, config = nf1_run
    profiles = pd.read_parquet(
        workdir
        / "results/profiles"
        / main_version(config)
        / "NF1_Plate2/NF1_Plate2_annotated.parquet"
    )
    assert sorted(profiles["Metadata_Well"]) == ["B07", "D06", "D07", "F07", "H12"]
    assert set(profiles["Metadata_genotype"]) == {"WT", "Null"}
    assert (profiles["Metadata_Object_Count"] > 5).all()
    assert "Cytoplasm_Intensity_MeanIntensity_ER" in profiles


def match_by_centroid(ours: np.ndarray, theirs: np.ndarray, max_distance: float) -> np.ndarray:
    """One-to-one matching of centroids (Hungarian), pairs closer than ``max_distance``.

    Returns ``(k, 2)`` index pairs ``(theirs row, ours row)``.
    """
    distance = np.hypot(*(theirs[:, None, :] - ours[None, :, :]).transpose(2, 0, 1))
    cost = np.where(distance <= max_distance, distance, 1e9)
    rows, cols = linear_sum_assignment(cost)
    keep = distance[rows, cols] <= max_distance
    return np.column_stack([rows[keep], cols[keep]])


def test_examplehuman_matches_cellprofiler(tmp_path):
    data = shared("cellprofiler_outputs", "ExampleHuman")
    config = yaml.safe_load((REPO / "config/examples/examplehuman.yaml").read_text())
    config["plates"][0]["images"] = str(data)
    config["plates"][0]["platemap"] = str(REPO / "config/examples/examplehuman_platemap.csv")
    # One well: per-well profiles are undefined, so the run stops at the features level.
    table = f"results/features/{main_version(config)}/ExampleHuman/D03.parquet"
    run_snakemake(tmp_path, config, targets=[table])
    ours = pd.read_parquet(tmp_path / table)
    cellprofiler = pd.read_csv(data / "Nuclei.csv")
    centres = ["Location_Center_X", "Location_Center_Y"]
    # A sixth of a nucleus diameter: the same nucleus, not a neighbour or a split piece.
    pairs = match_by_centroid(
        ours[[f"Nuclei_{c}" for c in centres]].to_numpy(), cellprofiler[centres].to_numpy(), 2.0
    )
    matched = len(pairs) / len(cellprofiler)
    r = {}
    for name in (
        "AreaShape_Area",
        "Intensity_MeanIntensity_DNA",
        "Intensity_MeanIntensity_PH3",
        "Intensity_IntegratedIntensity_DNA",
        "AreaShape_Eccentricity",
    ):
        theirs = cellprofiler[name].to_numpy()[pairs[:, 0]]
        mine = ours[f"Nuclei_{name}"].to_numpy()[pairs[:, 1]]
        r[name] = np.corrcoef(theirs, mine)[0, 1]
        print(f"{name}: r = {r[name]:.4f} (median ratio {np.median(mine / theirs):.3f})")
    # CellProfiler's ExampleHuman run measured no texture or granularity: compare those with
    # CellProfiler's definitions (cp_measure) on our own nuclei instead.
    from cp_measure.bulk import get_core_measurements

    (mask_path,) = (tmp_path / "results/masks").glob("*/ExampleHuman/*/*_nuclei.tiff")
    nuclei = tifffile.imread(mask_path).astype(np.int32)
    dna = tifffile.imread(next(data.glob("*d0.tif"))) / 255.0
    core = get_core_measurements()
    reference = {**core["texture"](nuclei, dna), **core["granularity"](nuclei, dna)}
    for name, theirs in (
        ("Texture_Contrast_DNA_3_00_256", "Contrast_3_00_256"),
        ("Granularity_2_DNA", "Granularity_2"),
    ):
        mine, ref = ours[f"Nuclei_{name}"].to_numpy(np.float64), np.asarray(reference[theirs])
        finite = np.isfinite(mine) & np.isfinite(ref)
        r[name] = np.corrcoef(mine[finite], ref[finite])[0, 1]
        print(f"{name}: r = {r[name]:.4f} against cp_measure on our {finite.sum()} nuclei")
    print(f"CellProfiler nuclei {len(cellprofiler)}, ours {len(ours)}, matched {len(pairs)}")
    print(
        f"matched_fraction={matched:.4f} r_area={r['AreaShape_Area']:.4f} "
        f"r_intensity={r['Intensity_MeanIntensity_DNA']:.4f}"
    )
    assert matched >= 0.95
    assert r["AreaShape_Area"] >= 0.98
    assert r["Intensity_MeanIntensity_DNA"] >= 0.98
    assert r["Texture_Contrast_DNA_3_00_256"] >= 0.999
    assert r["Granularity_2_DNA"] >= 0.999
    _cells_match_cellprofiler(ours, data, pairs)


def _cells_match_cellprofiler(ours: pd.DataFrame, data, pairs: np.ndarray) -> None:
    """The cell and cytoplasm CellProfiler grew from each matched nucleus against ours."""
    nuclei = pd.read_csv(data / "Nuclei.csv")["ObjectNumber"].to_numpy()[pairs[:, 0]]
    figures = {}
    for compartment in ("Cells", "Cytoplasm"):
        theirs_table = pd.read_csv(data / f"{compartment}.csv").set_index("Parent_Nuclei")
        # CellProfiler measured DNA and PH3 over its cells, not the cell-body image the cells
        # grow on; our mean cell-body intensity is printed for the record below.
        for name in (
            "AreaShape_Area",
            "Intensity_MeanIntensity_DNA",
            "Intensity_MeanIntensity_PH3",
        ):
            theirs = theirs_table.loc[nuclei, name].to_numpy()
            mine = ours[f"{compartment}_{name}"].to_numpy()[pairs[:, 1]]
            figures[compartment, name] = (
                np.corrcoef(theirs, mine)[0, 1],
                float(np.median(mine / theirs)),
            )
            print(
                f"{compartment}_{name}: r = {figures[compartment, name][0]:.4f} "
                f"(median ratio ours/CellProfiler {figures[compartment, name][1]:.3f})"
            )
    body = ours["Cells_Intensity_MeanIntensity_Actin"].to_numpy()[pairs[:, 1]]
    print(f"our mean cell-body intensity over the cell: median {np.median(body):.4f}")
    r_cell, cell_ratio = figures["Cells", "AreaShape_Area"]
    r_cyto, cyto_ratio = figures["Cytoplasm", "AreaShape_Area"]
    print(
        f"cells_matched={len(pairs)} r_cell_area={r_cell:.4f} cell_area_ratio={cell_ratio:.4f} "
        f"r_cytoplasm_area={r_cyto:.4f}"
    )
    for (compartment, name), (r, ratio) in figures.items():
        assert r >= 0.95, (compartment, name, r)
        if name == "AreaShape_Area":
            assert 0.9 <= ratio <= 1.1, (compartment, name, ratio)


def test_nf1_masks_against_cellprofilers(nf1_run):
    """Pixel IoU of the workflow's own masks (nf1.yaml as it runs) with CellProfiler's binary
    nuclei, cells and cytoplasm masks of the 5 sites, and its cell counts.

    nf1.yaml has the settings of the lab's NF1 analysis pipeline (NF1_analysis_plate1_plate2
    .cppipe), its border rules included: border nuclei discarded, cells touching the border
    discarded with their nuclei kept. The parquet holds CellProfiler's per-site counts.
    """
    workdir, config = nf1_run
    data = shared("nf1_cellpainting_plate2")
    masks = workdir / "results/masks" / main_version(config) / "NF1_Plate2"
    image = pd.read_parquet(
        data / "Plate_2_with_image_data_shrunken.parquet",
        columns=["Image_Metadata_Well_x", "Image_Count_Nuclei", "Image_Count_Cells"],
    ).set_index("Image_Metadata_Well_x")
    ious = {"Nuclei": {}, "Cells": {}, "Cytoplasm": {}}
    for theirs_path in sorted((data / "Plate_2_masks").glob("*_MaskCells.tiff")):
        well, _, _, site = theirs_path.name.split("_")[:4]
        ours_name = f"{well[0]}{int(well[1:]):02d}_s{site}"
        for compartment in ious:
            (theirs_file,) = (data / "Plate_2_masks").glob(f"{well}_*_Mask{compartment}.tiff")
            (ours_file,) = masks.glob(f"*/{ours_name}_{compartment.lower()}.tiff")
            theirs = tifffile.imread(theirs_file) > 0
            labels = tifffile.imread(ours_file)
            ours = labels > 0
            ious[compartment][well] = float((ours & theirs).sum() / (ours | theirs).sum())
            if compartment != "Cytoplasm":
                count = len(np.unique(labels)) - 1
                print(
                    f"\n{well} {compartment}: ours {count}, CellProfiler "
                    f"{image.loc[well, f'Image_Count_{compartment}']}"
                )
    mean = {name: float(np.mean(list(v.values()))) for name, v in ious.items()}
    for name, per_site in ious.items():
        print(f"NF1 {name} IoU per site: { {k: round(v, 4) for k, v in per_site.items()} }")
    print(
        f"nf1_iou_nuclei={mean['Nuclei']:.4f} nf1_iou_cells={mean['Cells']:.4f} "
        f"nf1_iou_cytoplasm={mean['Cytoplasm']:.4f}"
    )
    assert all(len(per_site) == 5 for per_site in ious.values())
    # The goal is 0.85 for the cells; every compartment is held to it.
    for name in ious:
        assert mean[name] >= 0.85, (name, mean[name])
        assert min(ious[name].values()) >= 0.85, (name, ious[name])
