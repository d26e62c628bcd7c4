"""Choose the assay readout without looking at the wells it is scored on (BBBC013).

A readout chosen by its Z' on the very control wells that Z' is then computed on is fitted
to them: on a replicate plate it does worse. Here each candidate readout, named beforehand
(:data:`CANDIDATES`), is scored by leave-one-row-out: on the control wells of three rows
every candidate is fitted (a threshold, where it has one) and scored by Z', the best one is
chosen, and its values on the fourth row's control wells are kept; over the four folds,
every control well gets a value from a readout chosen (and fitted) without it. The
out-of-sample Z', robust Z' and SSMD are computed once on those pooled values (each BBBC013
row holds one positive and two negative control wells). Folds may choose different
readouts, so each fold's held-out values are first put on its training controls' scale
(percent of control: 0 at the training negative median, 1 at the training positive median).
Robust z-scores against the training negatives, the earlier way, do not pool: a fraction of
cells has negatives with almost no spread, so its positives land at z-scores far from those
of a ratio's (pooled Z' -0.10 on rows A-D with these candidates, seen before this scale was
chosen).

The candidates, computed from the workflow's single cells (its nuclei and cytoplasm means,
and core and rings remeasured on its nuclei masks and corrected images):

- ratios of well medians, nucleus/cytoplasm and core/ring, for rings of several geometries
  (gap and width from the nucleus, :data:`RINGS`), and the log of each (a log's spread does
  not grow with its level);
- the well median of the per-cell core/ring ratio, and its log;
- the well median of the per-cell nucleus/cytoplasm ratio;
- the fraction of cells whose nucleus/cytoplasm or core/ring ratio is above a threshold,
  the threshold chosen inside the fold (the percentile of the training negative-control
  cells, among :data:`THRESHOLD_PERCENTILES`, that gives the best training Z').

Edge wells: here the negative controls are columns 01 (plate edge) and 02, the positives
column 12 (edge); a readout that differs between edge and inner wells widens the negatives
and so loses Z' inside every fold. The columns' values are printed for the chosen readout.

The readout to configure is the one the same procedure picks on all rows; its Z' on all
rows is printed too, labelled in-sample. Only workflow readouts (``quality.readout`` with
``features.options.Translocation``, :func:`workflow_settings`) can be configured.

    python benchmarks/readout_selection.py WORKSPACE   # a workspace that ran bbbc013.yaml

The last line is ``readout=<name> zprime_out_of_sample=<v> robust_zprime_out_of_sample=<v>
ssmd_out_of_sample=<v> zprime_in_sample=<v>``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
import yaml

from cellstrata.images.illumination import correct_image, read_function
from cellstrata.io import read_image, site_file
from cellstrata.levels import level_path
from cellstrata.profiles.platemap import CONTROL_COLUMN
from cellstrata.profiles.quality import robust_zprime, ssmd, zprime
from cellstrata.singlecell.features import measure_site

PLATE, CHANNEL = "BBBC013", "GFP"
NUCLEUS, CYTOPLASM = "Nuclei_Intensity_MeanIntensity_GFP", "Cytoplasm_Intensity_MeanIntensity_GFP"
TRANSLOCATION = "Nuclei_Translocation_{}_GFP"
#: Ring geometries (gap, width) in px from the nucleus, named beforehand: within the 7 px
#: cells of bbbc013.yaml, so no ring is clipped; (2, 5) is the Translocation default.
RINGS = ((0, 3), (1, 3), (2, 3), (2, 5), (1, 6))
#: Percentiles of the training negative-control cells tried as translocation thresholds.
THRESHOLD_PERCENTILES = (50, 75, 90, 95, 99)
KEYS = ["Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"]


def _ring(gap: int, width: int) -> str:
    return f"Ring_{gap}_{width}"


def _candidates() -> dict[str, dict[str, Any]]:
    candidates: dict[str, dict[str, Any]] = {}

    def add(kind: str, top: str, bottom: str, transform: str | None = None, **extra) -> None:
        name = {
            "ratio_of_medians": f"median {top} / median {bottom}",
            "median_ratio": f"median of {top} / {bottom}",
            "fraction_above": f"fraction of cells with {top} / {bottom} above t",
        }[kind]
        name = f"log({name})" if transform == "log" else name
        candidates[name] = {"kind": kind, "top": top, "bottom": bottom, "transform": transform}
        candidates[name].update(extra)

    for transform in (None, "log"):
        add("ratio_of_medians", NUCLEUS, CYTOPLASM, transform)
    add("median_ratio", NUCLEUS, CYTOPLASM)
    add("fraction_above", NUCLEUS, CYTOPLASM)
    for gap, width in RINGS:
        for kind in ("ratio_of_medians", "median_ratio"):
            for transform in (None, "log"):
                add(kind, "Core", _ring(gap, width), transform, ring=(gap, width))
        add("fraction_above", "Core", _ring(gap, width), ring=(gap, width))
    return candidates


#: Candidate name -> definition; named before any was scored.
CANDIDATES = _candidates()


def workflow_settings(candidate: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``quality.readout`` and ``features.options.Translocation`` of bbbc013.yaml that
    make a candidate the workflow's readout; None for a readout the workflow has not."""
    kind, transform = candidate["kind"], candidate["transform"]
    if candidate["top"] == NUCLEUS and kind == "ratio_of_medians":
        block = {"feature": NUCLEUS, "divide_by": CYTOPLASM, "transform": transform}
        return {"readout": block, "translocation": None}
    if candidate["top"] != "Core" or kind == "fraction_above":
        return None
    gap, width = candidate["ring"]
    if kind == "ratio_of_medians":
        block = {
            "feature": TRANSLOCATION.format("CoreMean"),
            "divide_by": TRANSLOCATION.format("RingMean"),
        }
    else:
        block = {"feature": TRANSLOCATION.format("CoreRingRatio"), "divide_by": None}
    return {
        "readout": {**block, "transform": transform},
        "translocation": {"gap": gap, "width": width},
    }


# --------------------------------------------------------------------------------------------
# single cells
# --------------------------------------------------------------------------------------------


def single_cells(workspace: str | Path, version: str, platemap: pd.DataFrame) -> pd.DataFrame:
    """Every cell of the workspace's BBBC013 plate with the values the candidates use.

    The nucleus and cytoplasm GFP means are the workflow's features; the core and the rings of
    :data:`RINGS` are measured again (Translocation, one geometry at a time) on the
    workflow's nuclei masks and its corrected GFP image (raw image over the illumination
    function, as the correct rule makes it). ``platemap`` has ``Metadata_Well`` and the
    control type (:data:`CONTROL_COLUMN`).
    """
    workspace = Path(workspace)
    features = pd.concat(
        pd.read_parquet(path, columns=KEYS + [NUCLEUS, CYTOPLASM])
        for path in sorted((workspace / level_path("features", PLATE, version)).glob("*.parquet"))
    )
    manifest = pd.read_parquet(workspace / level_path("manifest", PLATE))
    function, mode = read_function(
        workspace / level_path("illumination", PLATE) / f"{CHANNEL}.tiff"
    )
    masks = workspace / level_path("masks", PLATE, version)
    rings = []
    gfp = manifest[manifest["channel"] == CHANNEL]
    for well, site, path in gfp[["Metadata_Well", "Metadata_Site", "path"]].itertuples(index=False):
        (mask,) = masks.glob(f"*/{site_file(well, int(site), '_nuclei')}")
        nuclei = tifffile.imread(mask)
        image = {CHANNEL: correct_image(read_image(path), function, mode)}
        site_values = None
        for gap, width in RINGS:
            table = measure_site(
                {"Nuclei": nuclei},
                image,
                compartments=["Nuclei"],
                groups=["Translocation"],
                options={"Translocation": {"gap": gap, "width": width}},
            ).set_index("ObjectNumber")
            if site_values is None:
                site_values = table[[TRANSLOCATION.format("CoreMean")]].set_axis(["Core"], axis=1)
            site_values[_ring(gap, width)] = table[TRANSLOCATION.format("RingMean")]
        site_values = site_values.rename_axis("Metadata_ObjectNumber").reset_index()
        rings.append(site_values.assign(Metadata_Well=well, Metadata_Site=int(site)))
    cells = features.merge(pd.concat(rings), on=KEYS, how="inner", validate="one_to_one")
    controls = platemap[["Metadata_Well", CONTROL_COLUMN]]
    return cells.merge(controls, on="Metadata_Well", how="left").astype({"Metadata_Site": int})


# --------------------------------------------------------------------------------------------
# candidates: fit on training wells, values of every well
# --------------------------------------------------------------------------------------------


def _per_cell_ratio(cells: pd.DataFrame, candidate: Mapping[str, Any]) -> pd.Series:
    with np.errstate(divide="ignore", invalid="ignore"):
        return cells[candidate["top"]] / cells[candidate["bottom"]]


def _values(
    cells: pd.DataFrame, candidate: Mapping[str, Any], threshold: float | None = None
) -> pd.Series:
    """The readout of each well (indexed by well), given the fitted threshold if it has one."""
    wells = cells["Metadata_Well"]
    kind = candidate["kind"]
    if kind == "ratio_of_medians":
        medians = cells[[candidate["top"], candidate["bottom"]]].groupby(wells).median()
        values = medians[candidate["top"]] / medians[candidate["bottom"]]
    else:
        ratio = _per_cell_ratio(cells, candidate)
        finite = np.isfinite(ratio)
        if kind == "median_ratio":
            values = ratio[finite].groupby(wells[finite]).median()
        else:
            values = (ratio[finite] > threshold).groupby(wells[finite]).mean()
    return np.log(values) if candidate["transform"] == "log" else values


def _controls(
    cells: pd.DataFrame, values: pd.Series, wells: set[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) control-well values among ``wells``."""
    kind = cells.groupby("Metadata_Well")[CONTROL_COLUMN].first()
    values = values[values.index.isin(wells) & np.isfinite(values)]
    kind = kind.reindex(values.index).astype(str)
    return values[kind == "positive"].to_numpy(), values[kind == "negative"].to_numpy()


def fit(
    cells: pd.DataFrame, candidate: Mapping[str, Any], wells: set[str]
) -> tuple[float | None, float]:
    """Fit a candidate on the cells of ``wells``: ``(threshold or None, Z' there)``.

    A fraction-above-threshold candidate tries the :data:`THRESHOLD_PERCENTILES` of the
    per-cell ratio over these wells' negative-control cells and keeps the best Z'.
    """
    train = cells[cells["Metadata_Well"].isin(wells)]

    def score(threshold: float | None) -> float:
        try:
            return zprime(*_controls(train, _values(train, candidate, threshold), wells))
        except ValueError:
            return -np.inf

    if candidate["kind"] != "fraction_above":
        return None, score(None)
    ratio = _per_cell_ratio(train, candidate)
    negative = ratio[(train[CONTROL_COLUMN] == "negative") & np.isfinite(ratio)]
    thresholds = [float(np.percentile(negative, p)) for p in THRESHOLD_PERCENTILES]
    scores = [score(t) for t in thresholds]
    best = int(np.argmax(scores))
    return thresholds[best], scores[best]


def best_readout(
    cells: pd.DataFrame, candidates: Mapping[str, Mapping], wells: set[str]
) -> tuple[str, float | None, float]:
    """The candidate with the best fitted Z' on ``wells`` (first on ties): name, its
    threshold (or None) and that Z'."""
    fits = {name: fit(cells, candidate, wells) for name, candidate in candidates.items()}
    name = max(fits, key=lambda n: fits[n][1])
    return name, *fits[name]


def _rows(wells: pd.Index | pd.Series) -> np.ndarray:
    return pd.Series(wells).astype(str).str.extract(r"^([A-Za-z]+)", expand=False).to_numpy()


def leave_one_row_out(
    cells: pd.DataFrame, candidates: Mapping[str, Mapping]
) -> tuple[dict[str, float], list[dict]]:
    """Out-of-sample figures of the selection procedure, and each fold's choice.

    Returns
    -------
    tuple
        ``({"zprime", "robust_zprime", "ssmd"}, [{"row", "readout", "threshold",
        "train_zprime"}, ...])``, the figures computed once on the pooled held-out values.
    """
    controls = cells[cells[CONTROL_COLUMN].isin(["positive", "negative"])]
    all_wells = pd.Index(controls["Metadata_Well"].unique())
    rows = _rows(all_wells)
    folds, held = [], []
    for row in sorted(set(rows)):
        train, test = set(all_wells[rows != row]), set(all_wells[rows == row])
        name, threshold, score = best_readout(cells, candidates, train)
        folds.append({"row": row, "readout": name, "threshold": threshold, "train_zprime": score})
        values = _values(cells, candidates[name], threshold)
        train_pos, train_neg = _controls(cells, values, train)
        # On the training controls' scale (percent of control): 0 at their negative median,
        # 1 at their positive median, so that folds choosing different readouts pool.
        low, high = np.median(train_neg), np.median(train_pos)
        pos, neg = _controls(cells, values, test)
        held.append(((pos - low) / (high - low), (neg - low) / (high - low)))
    positive = np.concatenate([pos for pos, _ in held])
    negative = np.concatenate([neg for _, neg in held])
    figures = {
        "zprime": zprime(positive, negative),
        "robust_zprime": robust_zprime(positive, negative),
        "ssmd": ssmd(positive, negative),
    }
    return figures, folds


def control_wells(cells: pd.DataFrame) -> set[str]:
    """The positive and negative control wells of a cell table."""
    controls = cells[CONTROL_COLUMN].isin(["positive", "negative"])
    return set(cells.loc[controls, "Metadata_Well"])


def in_sample(cells: pd.DataFrame, name: str, threshold: float | None = None) -> dict[str, float]:
    """Z', robust Z' and SSMD of one candidate on all control wells (in-sample)."""
    values = _values(cells, CANDIDATES[name], threshold)
    pos, neg = _controls(cells, values, control_wells(cells))
    return {
        "zprime": zprime(pos, neg),
        "robust_zprime": robust_zprime(pos, neg),
        "ssmd": ssmd(pos, neg),
    }


def column_medians(cells: pd.DataFrame, name: str, threshold: float | None = None) -> pd.Series:
    """The median readout of the control wells of each plate column (edge-effect check)."""
    values = _values(cells, CANDIDATES[name], threshold)
    values = values[values.index.isin(control_wells(cells))]
    return values.groupby(values.index.str[1:]).median()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path, help="a workspace that ran bbbc013.yaml")
    args = parser.parse_args(argv)
    # The workspace's one segmentation version with BBBC013 profiles.
    (version,) = [p.parent.name for p in args.workspace.glob(level_path("profiles", PLATE, "*"))]
    profiles_dir = args.workspace / level_path("profiles", PLATE, version)
    profiles = pd.read_parquet(profiles_dir / f"{PLATE}_annotated.parquet")
    cells = single_cells(args.workspace, version, profiles)
    wells = control_wells(cells)
    print(f"{'candidate readout':72} {'Z` all rows (in-sample)':>24}")
    for name, candidate in CANDIDATES.items():
        print(f"{name:72} {fit(cells, candidate, wells)[1]:24.3f}")
    figures, folds = leave_one_row_out(cells, CANDIDATES)
    for fold in folds:
        print(
            f"held-out row {fold['row']}: chose {fold['readout']} "
            f"(Z' {fold['train_zprime']:.3f} on the other rows)"
        )
    chosen, threshold, _ = best_readout(cells, CANDIDATES, wells)
    inside = in_sample(cells, chosen, threshold)
    columns = column_medians(cells, chosen, threshold).round(3).to_dict()
    print(f"control-column medians of the chosen readout: {columns}")
    print(f"workflow settings: {yaml.safe_dump(workflow_settings(CANDIDATES[chosen])).strip()}")
    print(
        f"readout={chosen.replace(' ', '')} zprime_out_of_sample={figures['zprime']:.4f} "
        f"robust_zprime_out_of_sample={figures['robust_zprime']:.4f} "
        f"ssmd_out_of_sample={figures['ssmd']:.4f} zprime_in_sample={inside['zprime']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
