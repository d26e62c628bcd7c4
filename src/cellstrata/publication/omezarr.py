"""``cellstrata export ome-zarr``: a plate as an OME-NGFF high-content-screening plate (the
format IDR ingests and napari, via napari-ome-zarr, opens), written with the ``ome-zarr``
package: plate / row / column / field, each field a multiscale CYX image with its channel
names and contrast limits, the segmentation masks as its label images (nuclei, cells,
cytoplasm).

The same rules as :mod:`cellstrata.publication.publish`: a plate or level that is not public
on the day is refused, and so is a level not in the workspace (with what brings it back).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from cellstrata.levels import level_path
from cellstrata.publication.package import PublishError, missing_reason
from cellstrata.stewardship.origin import data_access, embargo_note, plate_origin

#: The image levels a field can hold, and the label level.
IMAGE_LEVELS = ("raw", "corrected")
LABELS = ("nuclei", "cells", "cytoplasm")
#: Channel colours in the order of the config's channels (DNA blue, then green, red, ...).
COLORS = ("0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")
SITE_FILE = re.compile(r"(?P<well>[A-Z]+\d+)_s(?P<site>\d+)(?:_(?P<label>[a-z]+))?\.tiff$")


def _split_well(well: str) -> tuple[str, str]:
    match = re.fullmatch(r"([A-Z]+)(\d+)", well)
    if match is None:
        raise ValueError(f"well {well!r} is not <row letters><column number>")
    return match[1], str(int(match[2]))


def _sites(workspace: Path, path: str) -> dict[tuple[str, int], dict[str | None, Path]]:
    """(well, site) -> {label or None: file} of a batch-level directory."""
    found: dict[tuple[str, int], dict[str | None, Path]] = {}
    for file in sorted((workspace / path).glob("*/*.tiff")):
        match = SITE_FILE.match(file.name)
        if match:
            found.setdefault((match["well"], int(match["site"])), {})[match["label"]] = file
    return found


def _check(
    config: Mapping[str, Any],
    workspace: Path,
    plate: str,
    levels: Sequence[str],
    version: str | None,
    day: date,
    config_name: str,
) -> None:
    names = [p["name"] for p in config["plates"]]
    if plate not in names:
        raise PublishError(f"unknown plate {plate!r} (plates: {', '.join(names)})")
    images = [lv for lv in levels if lv in IMAGE_LEVELS]
    unknown = [lv for lv in levels if lv not in (*IMAGE_LEVELS, "masks")]
    if unknown or len(images) != 1:
        raise PublishError(
            f"--levels {','.join(levels)}: one image level ({' or '.join(IMAGE_LEVELS)}) and "
            "optionally masks"
        )
    problems = []
    for level in levels:
        access = data_access(config, [plate], level, day)
        if access != "public":
            embargo = embargo_note(plate_origin(config, plate), day)
            problems.append(
                f"plate {plate}, level {level}: access {access} on {day}"
                + (f" (embargo {embargo})" if embargo else "")
                + "; only public data is exported"
            )
            continue
        if level == "raw":
            continue
        path = level_path(level, plate, version if level == "masks" else None)
        if not _sites(workspace, path):
            problems.append(missing_reason(config, level, plate, path, config_name))
    if problems:
        raise PublishError(
            f"export refused, nothing written ({len(problems)} problem(s)):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


def _fields(
    config: Mapping[str, Any], workspace: Path, plate: str, level: str
) -> tuple[dict[tuple[str, int], np.ndarray | list[Path]], list[str]]:
    """(well, site) -> the field's CYX stack source, and the channel names."""
    import pandas as pd

    channels = list(dict.fromkeys(config["channels"].values()))
    if level == "raw":
        manifest = pd.read_parquet(workspace / level_path("manifest", plate))
        found = {}
        for (well, site), group in manifest.groupby(["Metadata_Well", "Metadata_Site"]):
            paths = dict(zip(group["channel"], group["path"], strict=True))
            found[(well, int(site))] = [Path(paths[c]) for c in channels if c in paths]
        present = [c for c in channels if c in set(manifest["channel"])]
        return found, present
    files = _sites(workspace, level_path(level, plate))
    return {key: [entry[None]] for key, entry in files.items()}, channels


def _read_stack(sources: list[Path]) -> np.ndarray:
    import tifffile

    planes = [tifffile.imread(p) for p in sources]
    return planes[0] if len(planes) == 1 and planes[0].ndim == 3 else np.stack(planes)


def export_ome_zarr(
    config: Mapping[str, Any],
    workspace: str | os.PathLike,
    out: str | os.PathLike,
    *,
    plate: str,
    levels: Sequence[str] = ("corrected", "masks"),
    version: str | None = None,
    day: date | None = None,
    config_name: str = "config/config.yaml",
) -> Path:
    """Write ``plate`` as an OME-NGFF HCS plate in ``out`` (a new ``.zarr`` directory).

    Parameters
    ----------
    levels : sequence of str
        One image level (``corrected``, or ``raw``: the raw channels stacked) and optionally
        ``masks`` (segmentation ``version``, default the config's), as label images.

    Raises
    ------
    PublishError
        A plate or level that is not public on ``day`` (default today), a level not in the
        workspace (a deleted one with the command that remakes it), or ``out`` existing.
    """
    import tifffile
    import zarr
    from ome_zarr.format import CurrentFormat
    from ome_zarr.writer import write_image, write_labels, write_plate_metadata, write_well_metadata

    from cellstrata.segment.versions import experiment_versions

    workspace, out = Path(workspace), Path(out)
    day = day or date.today()
    version = version or experiment_versions(config)[0]
    _check(config, workspace, plate, list(levels), version, day, config_name)
    if out.exists():
        raise PublishError(f"{out} exists; export writes a new directory")
    image_level = next(lv for lv in levels if lv in IMAGE_LEVELS)
    fields, channels = _fields(config, workspace, plate, image_level)
    masks = _sites(workspace, level_path("masks", plate, version)) if "masks" in levels else {}
    wells = sorted(
        {well for well, _ in fields}, key=lambda w: (_split_well(w)[0], int(_split_well(w)[1]))
    )
    rows = sorted({_split_well(w)[0] for w in wells})
    columns = sorted({_split_well(w)[1] for w in wells}, key=int)
    stacks = {key: _read_stack(sources) for key, sources in fields.items()}
    limits = []
    for index in range(len(channels)):
        values = np.concatenate([s[index].ravel() for s in stacks.values()])
        low, high = np.percentile(values, [0.1, 99.9])
        limits.append((float(values.min()), float(values.max()), float(low), float(high)))
    omero = {
        "name": plate,
        "channels": [
            {
                "label": name,
                "color": COLORS[i % len(COLORS)],
                "active": True,
                "window": {"min": lo, "max": hi, "start": start, "end": end},
            }
            for i, (name, (lo, hi, start, end)) in enumerate(zip(channels, limits, strict=True))
        ],
        "rdefs": {"model": "color"},
    }
    fmt_version = CurrentFormat().version
    root = zarr.open_group(str(out), mode="w")
    well_paths = ["/".join(_split_well(w)) for w in wells]
    sites = {well: sorted(site for w, site in fields if w == well) for well in wells}
    write_plate_metadata(
        root,
        rows,
        columns,
        well_paths,
        field_count=max(len(s) for s in sites.values()),
        name=plate,
    )
    for well, path in zip(wells, well_paths, strict=True):
        row, column = path.split("/")
        group = root.require_group(row).require_group(column)
        write_well_metadata(group, [{"path": str(i)} for i in range(len(sites[well]))])
        for index, site in enumerate(sites[well]):
            field = group.require_group(str(index))
            write_image(
                stacks[(well, site)],
                field,
                axes="cyx",
                scale_factors=(2,),
                metadata={"omero": omero, "name": f"{plate} {well} site {site}"},
            )
            written = [label for label in LABELS if label in masks.get((well, site), {})]
            for label in written:
                write_labels(
                    tifffile.imread(masks[(well, site)][label]),
                    field,
                    name=label,
                    axes="yx",
                    scaler=None,  # its default Scaler would make 5 levels, the image has 2
                    scale_factors=(2,),
                    # The image a label belongs to (viewers overlay it there); no colours: a
                    # viewer picks them (ome-zarr-models 1.6 needs the key, empty is allowed).
                    label_metadata={"source": {"image": "../../"}, "colors": []},
                )
            if written:
                # ome-zarr 0.17 leaves the NGFF version out of the labels group, which NGFF
                # 0.5 requires of every group (ome-zarr-models refuses the plate without it).
                labels = field["labels"]
                labels.attrs["ome"] = {"version": fmt_version, **labels.attrs["ome"]}
    return out
