"""The experiment level of a version: its plates' normalized profiles stacked, feature
selection across them, and consensus profiles per treatment."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from pycytominer import consensus
from pycytominer.cyto_utils import infer_cp_features

from cellstrata.io import write_parquet
from cellstrata.profiles.aggregate import select_features
from cellstrata.profiles.platemap import CONTROL_COLUMN, PlatemapError, metadata_name

log = logging.getLogger(__name__)

#: The experiment-level tables of a version, across its plates.
EXPERIMENT_STEPS = ("normalized", "feature_selected", "consensus")


def combine_plates(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Stack per-plate profiles, keeping the features every plate has.

    Per-plate normalization may leave a feature out of one plate (no spread in its controls);
    a stacked table with that column NaN for whole plates would mislead feature selection
    and distances, so such features are dropped and counted in the log.
    """
    if not tables:
        raise ValueError("no plate profiles to combine")
    features = [infer_cp_features(table) for table in tables]
    common = set(features[0]).intersection(*features[1:])
    dropped = sorted(set().union(*features) - common)
    if dropped:
        log.warning(
            "%d feature(s) missing from some plates left out of the experiment: %s",
            len(dropped),
            dropped[:10],
        )
    kept = [f for f in features[0] if f in common]
    metadata = list(
        dict.fromkeys(c for t in tables for c in t.columns if c.startswith("Metadata_"))
    )
    return pd.concat([t.reindex(columns=[*metadata, *kept]) for t in tables], ignore_index=True)


def consensus_profiles(
    profiles: pd.DataFrame, *, treatment_columns: Sequence[str], operation: str = "median"
) -> pd.DataFrame:
    """One profile per treatment across its replicate wells and plates (pycytominer's
    consensus), with ``Metadata_Replicates``, the wells it summarises.

    ``treatment_columns`` may be given with or without the ``Metadata_`` prefix; with none,
    the table is empty (no treatments are defined).
    """
    columns = [metadata_name(c) for c in treatment_columns]
    missing = [c for c in columns if c not in profiles]
    if missing:
        raise PlatemapError(f"treatment column(s) {missing} not in the profiles")
    if not columns:
        log.warning("platemap.treatment_columns is empty: no consensus profiles")
        return pd.DataFrame(columns=["Metadata_Replicates"])
    # Controls are one treatment whatever their other columns say.
    columns = list(dict.fromkeys([*columns, CONTROL_COLUMN]))
    grouped = consensus(profiles, replicate_columns=columns, operation=operation, features="infer")
    replicates = profiles.groupby(columns, dropna=False).size().rename("Metadata_Replicates")
    return grouped.merge(replicates.reset_index(), on=columns, how="left").reindex(
        columns=[*columns, "Metadata_Replicates", *infer_cp_features(grouped)]
    )


def build_experiment(
    normalized_paths: Sequence[str | os.PathLike],
    *,
    treatment_columns: Sequence[str] = (),
    feature_select_operations: Sequence[str] = ("variance_threshold",),
    consensus_operation: str = "median",
) -> dict[str, pd.DataFrame]:
    """Across the plates of an experiment: the normalized profiles stacked
    (:func:`combine_plates`), feature selection on all of them, and consensus per treatment.

    Returns
    -------
    dict
        :data:`EXPERIMENT_STEPS` -> DataFrame.
    """
    normalized = combine_plates([pd.read_parquet(path) for path in normalized_paths])
    selected = select_features(normalized, operations=feature_select_operations)
    return {
        "normalized": normalized,
        "feature_selected": selected,
        "consensus": consensus_profiles(
            selected, treatment_columns=treatment_columns, operation=consensus_operation
        ),
    }


def write_experiment(
    normalized_paths: Sequence[str | os.PathLike],
    outputs: Mapping[str, str | os.PathLike],
    **options: Any,
) -> dict[str, pd.DataFrame]:
    """Run :func:`build_experiment` and write each table to ``outputs[name]`` as Parquet."""
    tables = build_experiment(normalized_paths, **options)
    for name in EXPERIMENT_STEPS:
        write_parquet(outputs[name], tables[name])
    return tables
