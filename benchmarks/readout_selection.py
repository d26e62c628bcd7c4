"""Choose the assay readout without looking at the wells it is scored on (BBBC013).

A readout chosen by its Z' on the very control wells that Z' is then computed on is fitted
to them: on a replicate plate it does worse. Here each candidate readout is scored by
leave-one-row-out: the readout with the best Z' on the control wells of three rows is
chosen, and its values on the fourth row's control wells are kept; over the four folds,
every control well gets a value from a readout chosen without it. The out-of-sample Z' is
computed once on those pooled values (each BBBC013 row holds one positive and two negative
control wells). When the folds choose different readouts, their values are put on one scale
first: each fold's values as robust z-scores against its own training negative controls.

The readout to configure is the one the same procedure picks on all rows; its Z' on all
rows is printed too, labelled in-sample.

    python benchmarks/readout_selection.py PROFILES   # a BBBC013_annotated.parquet

The last line is ``readout=<name> zprime_out_of_sample=<v> zprime_in_sample=<v>
nuc_cyto_zprime=<v>``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cellstrata.profiles.platemap import CONTROL_COLUMN
from cellstrata.profiles.quality import readout, readout_name, zprime

CORE, RING = "Nuclei_Translocation_CoreMean_GFP", "Nuclei_Translocation_RingMean_GFP"
NUCLEUS, CYTOPLASM = "Nuclei_Intensity_MeanIntensity_GFP", "Cytoplasm_Intensity_MeanIntensity_GFP"
#: Candidate readouts (quality.readout blocks), named a priori: ratios of well medians, the
#: well median of a per-cell ratio, and the log of each (a log's spread does not grow with
#: its level).
CANDIDATES: dict[str, dict] = {}
for _block in (
    {"feature": CORE, "divide_by": RING},
    {"feature": "Nuclei_Translocation_CoreRingRatio_GFP", "divide_by": None},
    {"feature": NUCLEUS, "divide_by": CYTOPLASM},
):
    for _transform in (None, "log"):
        _candidate = {**_block, "transform": _transform}
        CANDIDATES[readout_name(**_candidate)] = _candidate


def _row(wells: pd.Series) -> pd.Series:
    return wells.astype(str).str.extract(r"^([A-Za-z]+)", expand=False).str.upper()


def control_values(
    profiles: pd.DataFrame, candidate: Mapping, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) control-well values of a readout, within ``mask``."""
    values = readout(profiles, **candidate).to_numpy()
    kind = profiles[CONTROL_COLUMN].astype(str).to_numpy()
    keep = np.isfinite(values) & (np.ones(len(values), bool) if mask is None else mask)
    return values[keep & (kind == "positive")], values[keep & (kind == "negative")]


def best_readout(
    profiles: pd.DataFrame, candidates: Mapping[str, Mapping], mask: np.ndarray | None = None
) -> tuple[str, float]:
    """The candidate with the highest Z' on the control wells within ``mask`` (first on ties)."""
    scores = {}
    for name, candidate in candidates.items():
        try:
            scores[name] = zprime(*control_values(profiles, candidate, mask))
        except ValueError:
            scores[name] = -np.inf
    name = max(scores, key=scores.get)
    return name, scores[name]


def leave_one_row_out(
    profiles: pd.DataFrame, candidates: Mapping[str, Mapping]
) -> tuple[float, list[dict]]:
    """Out-of-sample Z' of the selection procedure, and each fold's choice.

    Returns
    -------
    tuple
        ``(pooled Z', [{"row", "readout", "train_zprime"}, ...])``.
    """
    rows = _row(profiles["Metadata_Well"]).to_numpy()
    controls = profiles[CONTROL_COLUMN].isin(["positive", "negative"]).to_numpy()
    folds, held = [], []
    for row in sorted(set(rows[controls])):
        train = rows != row
        name, score = best_readout(profiles, candidates, train)
        folds.append({"row": row, "readout": name, "train_zprime": score})
        held.append((name, train, control_values(profiles, candidates[name], rows == row)))
    if len({name for name, _, _ in held}) > 1:
        scaled = []
        for name, train, (pos, neg) in held:
            ref = control_values(profiles, candidates[name], train)[1]
            centre = np.median(ref)
            scale = 1.4826 * np.median(np.abs(ref - centre)) or 1.0
            scaled.append(((pos - centre) / scale, (neg - centre) / scale))
        pooled = scaled
    else:
        pooled = [values for _, _, values in held]
    positive = np.concatenate([pos for pos, _ in pooled])
    negative = np.concatenate([neg for _, neg in pooled])
    return zprime(positive, negative), folds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", type=Path, help="annotated per-well profiles (Parquet)")
    args = parser.parse_args(argv)
    profiles = pd.read_parquet(args.profiles)
    print(f"{'candidate readout':70} {'Z` all rows (in-sample)':>24}")
    for name, candidate in CANDIDATES.items():
        print(f"{name:70} {zprime(*control_values(profiles, candidate)):24.3f}")
    out_of_sample, folds = leave_one_row_out(profiles, CANDIDATES)
    for fold in folds:
        print(
            f"held-out row {fold['row']}: chose {fold['readout']} "
            f"(Z' {fold['train_zprime']:.3f} on the other rows)"
        )
    chosen, in_sample = best_readout(profiles, CANDIDATES)
    nuc_cyto = zprime(*control_values(profiles, {"feature": NUCLEUS, "divide_by": CYTOPLASM}))
    print(
        f"readout={chosen.replace(' ', '')} zprime_out_of_sample={out_of_sample:.4f} "
        f"zprime_in_sample={in_sample:.4f} nuc_cyto_zprime={nuc_cyto:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
