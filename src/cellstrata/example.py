"""Seeded synthetic Cell Painting-like plates: the project's embedded example data set.

The repository ships no third-party images, so examples, tests and benchmarks run on plates
rendered here. Each site is a small scene of cells:

* **Nuclei** are smooth ellipses (mean radius 6-10 px at ``size=256``) placed by rejection
  sampling on centre distance, so some pairs touch or nearly touch but none overlap heavily.
  The DNA stain is slightly domed and carries a fine chromatin texture. Nuclei may be cut by
  the border; off-frame neighbours contribute cytoplasm near the edges.
* **Cell bodies** grow from the nuclei to 2-2.5x the nuclear radius with an irregular outline
  (low-order harmonics); where neighbours compete, pixels go to the cell whose normalised
  distance is smallest, a weighted Voronoi partition, so cells never overlap. The AGP (actin)
  stain fills the cell body, brighter at the cortex and dimmer over the nucleus.
* **GFP** is a protein that translocates from cytoplasm to nucleus with dose: the
  nuclear/cytoplasmic concentration ratio (and hence the nuclear fraction) follows a Hill
  sigmoid of log dose, with cell-to-cell variability in sensitivity, level and expression.
* **Optics and camera**: a Gaussian PSF blur, a smooth off-centre vignetting field per channel
  (maximum 1, about 0.5-0.6 at the corners), a dark background, a camera offset of
  100 ADU, Poisson shot noise and Gaussian read noise, clipped to uint16.

Random streams are derived per site from ``numpy.random.SeedSequence(seed, spawn_key=...)``
keyed by the plate name (CRC-32), the well and the site, so adding plates, wells or sites never
changes an existing image, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage

from cellstrata.io import atomic_path

__all__ = ["generate_example", "example_platemap", "CHANNELS", "CAMERA_OFFSET"]

#: Channel number (the ``w{n}`` in file names) to stain name.
CHANNELS: dict[int, str] = {1: "DNA", 2: "GFP", 3: "AGP"}

#: Camera offset (bias) added to every pixel, in ADU.
CAMERA_OFFSET = 100.0
_READ_NOISE = 3.0  # Gaussian read noise, ADU (sd)
_BACKGROUND = {1: 15.0, 2: 40.0, 3: 30.0}  # dark background signal per channel, ADU

# Dose-response model (doses in micromolar).
_DOSE_MIN, _DOSE_MAX = 0.03, 10.0  # span of the dose series
_POSITIVE_DOSE = 100.0  # saturating dose of the positive control
_EC50 = 0.5
_HILL = 1.2
# Nuclear/cytoplasmic GFP concentration ratio of the unstimulated and fully stimulated cell,
# before PSF blur (blur pulls the measured ratio a little towards 1).
_RATIO_OFF, _RATIO_ON = 0.55, 4.3

_MIN_CELLS, _MAX_CELLS = 20, 40  # cells per site, inclusive
_OUTSIDE_REACH = 32.0  # px at size 256: band outside the image holding off-frame cells
_ILLUM_KEY = 0x1111  # spawn-key prefix of the illumination streams


@dataclass(frozen=True)
class _Nuclei:
    """Geometry of the nuclei of one site (arrays of length n)."""

    cx: np.ndarray  # centre column
    cy: np.ndarray  # centre row
    a: np.ndarray  # semi-major axis, px
    b: np.ndarray  # semi-minor axis, px
    phi: np.ndarray  # orientation of the major axis, rad


def example_platemap(rows: str = "ABCD", columns: int = 6) -> pd.DataFrame:
    """Return the platemap used for every synthetic plate.

    Parameters
    ----------
    rows : str
        Row letters, e.g. ``"ABCD"``.
    columns : int
        Number of columns (at least 3). Column 01 holds the negative control (DMSO, dose 0),
        the last column the positive control at a saturating dose, and the columns in between
        a log-spaced, increasing dose series of the compound.

    Returns
    -------
    pandas.DataFrame
        One row per well, row-major (``A01, A02, ...``), with columns ``well``,
        ``treatment`` (``DMSO``, ``compound`` or ``positive``), ``dose`` (float, micromolar)
        and ``control`` (``negative``, ``treated`` or ``positive``).
    """
    _check_layout(rows, columns)
    n_doses = columns - 2
    doses = np.geomspace(_DOSE_MIN, _DOSE_MAX, n_doses) if n_doses > 1 else np.array([_EC50])
    records = []
    for row in rows:
        for col in range(1, columns + 1):
            if col == 1:
                treatment, dose, control = "DMSO", 0.0, "negative"
            elif col == columns:
                treatment, dose, control = "positive", _POSITIVE_DOSE, "positive"
            else:
                treatment, dose, control = "compound", float(doses[col - 2]), "treated"
            well = f"{row}{col:02d}"
            records.append({"well": well, "treatment": treatment, "dose": dose, "control": control})
    return pd.DataFrame.from_records(records, columns=["well", "treatment", "dose", "control"])


def generate_example(
    out_dir: str | os.PathLike,
    *,
    plates: Sequence[str] = ("SYN01", "SYN02"),
    rows: str = "ABCD",
    columns: int = 6,
    sites: int = 2,
    size: int = 256,
    seed: int = 0,
) -> dict[str, Path]:
    """Render a synthetic Cell Painting-like experiment with its ground truth.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output directory (created if needed; existing files of the same names are replaced).
    plates : sequence of str
        Plate names (letters, digits and ``-`` only). Every plate uses the same platemap.
    rows : str
        Plate row letters; wells are named ``{row}{column:02d}``.
    columns : int
        Number of plate columns (at least 3); see :func:`example_platemap` for the layout.
    sites : int
        Fields of view per well (1-based ``s{site}`` in file names).
    size : int
        Image height and width in pixels (at least 64). Object sizes scale with ``size / 256``
        so every site holds 20-40 cells whatever the size.
    seed : int
        Non-negative master seed. The same seed gives byte-identical files.

    Returns
    -------
    dict of str to pathlib.Path
        ``"images"``: the images root (``images/{plate}/{plate}_{well}_s{site}_w{n}.tif``,
        uint16, ``n`` = 1 DNA, 2 GFP, 3 AGP); ``"platemap"``: ``platemap.csv``;
        ``"cells"``: ``ground_truth/cells.parquet`` (one row per cell: plate, well, site,
        cell, x, y, nucleus_area_px, cell_area_px, gfp_nuclear_fraction,
        gfp_nuc_cyto_ratio); ``"wells"``: ``ground_truth/wells.csv`` (plate, well, dose,
        control, n_cells, gfp_nuc_cyto_ratio). ``ground_truth/illumination_w{n}.tiff``
        holds the float32 vignetting field of each channel (maximum 1).

    Notes
    -----
    Ground-truth intensities are measured on the noiseless rendered signal (after PSF blur,
    before background, vignetting, offset and noise) with the true masks: the per-cell ratio
    is mean GFP over the nucleus / mean GFP over the cytoplasm (cell minus nucleus), and the
    well value is the mean of the per-cell ratios over all its sites. ``gfp_nuclear_fraction``
    is the share of the cell's GFP that lies over its nucleus. ``x``, ``y`` are the nucleus
    mask centroid (``x`` = column, 0-based pixel coordinates); areas count visible pixels.
    Every nucleus centre lies inside the image, so at least about half of each nucleus is
    visible; cell bodies may be cut by the border. Off-frame cells (nucleus wholly outside the
    image) are rendered where their cytoplasm reaches in, so density does not drop at the
    edges, but they are not part of the ground truth.
    """
    plates = list(plates)
    _check_args(plates, rows, columns, sites, size, seed)
    out = Path(out_dir)
    images_root = out / "images"
    truth_dir = out / "ground_truth"
    images_root.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)

    platemap = example_platemap(rows, columns)
    _write_csv(out / "platemap.csv", platemap)

    illumination = {ch: _illumination(size, seed, ch) for ch in CHANNELS}
    for ch, field in illumination.items():
        with atomic_path(truth_dir / f"illumination_w{ch}.tiff") as tmp:
            tifffile.imwrite(tmp, field.astype(np.float32), photometric="minisblack")

    cell_tables = []
    well_records = []
    for plate in plates:
        plate_dir = images_root / plate
        plate_dir.mkdir(parents=True, exist_ok=True)
        for well, dose, control in platemap[["well", "dose", "control"]].itertuples(index=False):
            ratios = []
            n_cells = 0
            for site in range(1, sites + 1):
                rng = np.random.default_rng(_site_seed(seed, plate, well, site))
                raw, cells = _render_site(rng, size, float(dose), illumination)
                for ch, image in raw.items():
                    _write_image(plate_dir / f"{plate}_{well}_s{site}_w{ch}.tif", image)
                cells.insert(0, "site", site)
                cells.insert(0, "well", well)
                cells.insert(0, "plate", plate)
                cell_tables.append(cells)
                ratios.append(cells["gfp_nuc_cyto_ratio"].to_numpy())
                n_cells += len(cells)
            all_ratios = np.concatenate(ratios)
            well_records.append(
                {
                    "plate": plate,
                    "well": well,
                    "dose": float(dose),
                    "control": control,
                    "n_cells": n_cells,
                    "gfp_nuc_cyto_ratio": float(np.nanmean(all_ratios)),
                }
            )

    cells_df = pd.concat(cell_tables, ignore_index=True)
    wells_df = pd.DataFrame.from_records(well_records)
    cells_path = truth_dir / "cells.parquet"
    with atomic_path(cells_path) as tmp:
        cells_df.to_parquet(tmp, index=False)
    _write_csv(truth_dir / "wells.csv", wells_df)
    return {
        "images": images_root,
        "platemap": out / "platemap.csv",
        "cells": cells_path,
        "wells": truth_dir / "wells.csv",
    }


# --------------------------------------------------------------------------------------------
# Validation and seeding


def _check_layout(rows: str, columns: int) -> None:
    if not rows or not re.fullmatch(r"[A-Z]+", rows) or len(set(rows)) != len(rows):
        raise ValueError(f"rows must be distinct upper-case letters, got {rows!r}")
    if int(columns) != columns or columns < 3 or columns > 99:
        raise ValueError(f"columns must be an integer in 3..99, got {columns!r}")


def _check_args(
    plates: list[str], rows: str, columns: int, sites: int, size: int, seed: int
) -> None:
    if not plates:
        raise ValueError("plates must name at least one plate")
    if len(set(plates)) != len(plates):
        raise ValueError(f"plate names must be unique, got {plates!r}")
    for plate in plates:
        if not isinstance(plate, str) or not re.fullmatch(r"[A-Za-z0-9-]+", plate):
            raise ValueError(f"plate names may hold letters, digits and '-' only, got {plate!r}")
    _check_layout(rows, columns)
    if int(sites) != sites or sites < 1:
        raise ValueError(f"sites must be a positive integer, got {sites!r}")
    if int(size) != size or size < 64:
        raise ValueError(f"size must be an integer >= 64, got {size!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _site_seed(seed: int, plate: str, well: str, site: int) -> np.random.SeedSequence:
    """Independent stream per (plate, well, site), stable when the layout grows."""
    row, col = well[0], int(well[1:])
    key = (zlib.crc32(plate.encode("utf-8")), ord(row), col, int(site))
    return np.random.SeedSequence(int(seed), spawn_key=key)


# --------------------------------------------------------------------------------------------
# Rendering


def _illumination(size: int, seed: int, channel: int) -> np.ndarray:
    """Smooth multiplicative vignetting: bright, slightly off-centre; ~0.5-0.6 at corners."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_ILLUM_KEY, channel)))
    centre = (size - 1) / 2.0 + rng.uniform(-0.05, 0.05, size=2) * size
    # Gaussian falloff tuned so the mean corner sits near 0.55 of the maximum.
    half_diag = np.hypot(size / 2.0, size / 2.0)
    sigma = half_diag / np.sqrt(2.0 * -np.log(rng.uniform(0.52, 0.60)))
    aspect = rng.uniform(0.92, 1.08)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    q = ((xx - centre[1]) / (sigma * aspect)) ** 2 + ((yy - centre[0]) * aspect / sigma) ** 2
    field = np.exp(-0.5 * q)
    return field / field.max()


def _place_nuclei(
    rng: np.random.Generator, n_in: int, n_out: int, size: int, scale: float
) -> _Nuclei:
    """Rejection-sample non-overlapping nucleus ellipses.

    The first ``n_in`` nuclei have their centre inside the image (so at least about half of
    each is visible); about 1 in 4 proposals is seeded next to an already placed nucleus,
    which gives touching and near-touching pairs. Then up to ``n_out`` "outside" nuclei are
    placed beyond the border, far enough that the nucleus itself is invisible: only their
    cytoplasm may reach into the image, so cell density does not fall off near the edges.
    Centre distances are at least 0.9 x the sum of the semi-major axes.
    """
    total = n_in + n_out
    radius = rng.uniform(6.0, 10.0, size=total) * scale
    elong = rng.uniform(1.0, 1.45, size=total)
    a_all = radius * np.sqrt(elong)
    b_all = radius / np.sqrt(elong)
    phi_all = rng.uniform(0.0, np.pi, size=total)
    ext = _OUTSIDE_REACH * scale
    hi = size - 1.0
    cx, cy, a, b, phi = (np.empty(total) for _ in range(5))
    placed = 0
    for i in range(total):
        inside = i < n_in
        for _ in range(200):
            if inside and placed and rng.random() < 0.25:
                j = rng.integers(placed)
                dist = (a_all[i] + a[j]) * rng.uniform(0.92, 1.15)
                ang = rng.uniform(0.0, 2.0 * np.pi)
                x, y = cx[j] + dist * np.cos(ang), cy[j] + dist * np.sin(ang)
            elif inside:
                x, y = rng.uniform(0.0, hi, size=2)
            else:
                x, y = rng.uniform(-ext, hi + ext, size=2)
            if inside and not (0.0 <= x <= hi and 0.0 <= y <= hi):
                continue
            gap = a_all[i] + 1.0
            if not inside and (-gap < x < hi + gap and -gap < y < hi + gap):
                continue
            d = np.hypot(cx[:placed] - x, cy[:placed] - y)
            if np.all(d >= 0.9 * (a[:placed] + a_all[i])):
                cx[placed], cy[placed] = x, y
                a[placed], b[placed], phi[placed] = a_all[i], b_all[i], phi_all[i]
                placed += 1
                break
        else:
            if inside:  # pragma: no cover - the scene is far from saturated
                raise RuntimeError("could not place the requested number of nuclei")
    keep = slice(0, placed)
    return _Nuclei(cx[keep], cy[keep], a[keep], b[keep], phi[keep])


def _partition(rng: np.random.Generator, nuc: _Nuclei, size: int) -> tuple[np.ndarray, ...]:
    """Grow irregular cell bodies from the nuclei as a weighted Voronoi partition.

    For cell *i* and pixel *p*, ``rn = |p - c_i|`` in the nucleus' elliptical metric (1 on
    the nuclear outline) and ``d = (rn - 1) / (k_i (1 + h_i(theta)) - 1)`` is 0 on the
    nuclear outline and 1 on the preferred cell outline. Each pixel goes to the cell of
    smallest ``d``; it is nucleus where that ``d <= 0`` and cytoplasm where ``0 < d <= 1``.

    Returns ``(owner, d, rn)`` images; ``owner`` is 1-based, 0 where no cell claims the pixel.
    """
    n = len(nuc.cx)
    k = rng.uniform(2.0, 2.5, size=n)
    orders = np.arange(2, 6)
    amp = rng.uniform(0.0, 1.0, size=(n, orders.size)) * (0.25 / orders)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(n, orders.size))

    best = np.full((size, size), np.inf)
    owner = np.zeros((size, size), dtype=np.int32)
    rn_img = np.zeros((size, size))
    for i in range(n):
        reach = k[i] * (1.0 + amp[i].sum()) * nuc.a[i] + 1.0
        x0 = max(int(np.floor(nuc.cx[i] - reach)), 0)
        x1 = min(int(np.ceil(nuc.cx[i] + reach)) + 1, size)
        y0 = max(int(np.floor(nuc.cy[i] - reach)), 0)
        y1 = min(int(np.ceil(nuc.cy[i] + reach)) + 1, size)
        if x1 <= x0 or y1 <= y0:
            continue  # an off-frame cell that does not reach into the image
        dy = np.arange(y0, y1)[:, None] - nuc.cy[i]
        dx = np.arange(x0, x1)[None, :] - nuc.cx[i]
        cos_p, sin_p = np.cos(nuc.phi[i]), np.sin(nuc.phi[i])
        u = dx * cos_p + dy * sin_p
        v = -dx * sin_p + dy * cos_p
        rn = np.sqrt((u / nuc.a[i]) ** 2 + (v / nuc.b[i]) ** 2)
        theta = np.arctan2(dy, dx)
        h = np.zeros_like(rn)
        for m, am, ph in zip(orders, amp[i], phase[i], strict=True):
            h += am * np.cos(m * theta + ph)
        d = (rn - 1.0) / (k[i] * (1.0 + h) - 1.0)
        win = best[y0:y1, x0:x1]
        better = d < win
        win[better] = d[better]
        owner[y0:y1, x0:x1][better] = i + 1
        rn_img[y0:y1, x0:x1][better] = rn[better]
    return owner, best, rn_img


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian random field of correlation length ``sigma`` px."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field / field.std()


def _hill(dose: float, ec50: np.ndarray) -> np.ndarray:
    """Fraction of the maximal response of each cell (Hill curve in dose); 0 at dose 0."""
    if dose <= 0:
        return np.zeros_like(ec50)
    return 1.0 / (1.0 + (ec50 / dose) ** _HILL)


def _render_site(
    rng: np.random.Generator, size: int, dose: float, illumination: dict[int, np.ndarray]
) -> tuple[dict[int, np.ndarray], pd.DataFrame]:
    """Render the three channels of one site and its per-cell ground truth."""
    scale = size / 256.0
    n = int(rng.integers(_MIN_CELLS, _MAX_CELLS + 1))
    band = ((size + 2.0 * _OUTSIDE_REACH * scale) ** 2 - size**2) / size**2
    nuc = _place_nuclei(rng, n, int(round(n * band)), size, scale)
    owner, d, rn = _partition(rng, nuc, size)
    # Labels 1..n are the cells whose nucleus centre lies in the image; higher labels are
    # off-frame cells whose cytoplasm reaches in: rendered, but not part of the ground truth.
    n_all = len(nuc.cx)
    cell_lab = np.where(d <= 1.0, owner, 0)
    nuc_lab = np.where(d <= 0.0, owner, 0)
    cyto_lab = np.where(nuc_lab > 0, 0, cell_lab)

    nuc_area = np.bincount(nuc_lab.ravel(), minlength=n_all + 1)[1:].astype(np.float64)
    cyto_area = np.bincount(cyto_lab.ravel(), minlength=n_all + 1)[1:].astype(np.float64)
    cell_area = nuc_area + cyto_area

    # Per-cell parameters (index 0 of each lookup table is the background).
    dna_level = 3000.0 * rng.lognormal(0.0, 0.2, size=n_all)
    agp_level = 900.0 * rng.lognormal(0.0, 0.25, size=n_all)
    gfp_level = 900.0 * rng.lognormal(0.0, 0.3, size=n_all)  # mean GFP per cell pixel
    ec50 = _EC50 * rng.lognormal(0.0, 0.5, size=n_all)
    response = _hill(dose, ec50)
    log_ratio = (
        np.log(_RATIO_OFF)
        + response * (np.log(_RATIO_ON) - np.log(_RATIO_OFF))
        + rng.normal(0.0, 0.12, size=n_all)
    )
    ratio = np.exp(log_ratio)
    # Conserve total protein: gfp_level * cell_area = c_cyto * cyto_area + c_nuc * nuc_area.
    with np.errstate(divide="ignore", invalid="ignore"):
        c_cyto = gfp_level * cell_area / (cyto_area + ratio * nuc_area)
    c_cyto = np.nan_to_num(c_cyto)  # off-frame cells with no visible pixel
    c_nuc = ratio * c_cyto

    def lut(values: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], values])

    psf = max(1.0 * scale, 0.6)
    tex_dna = _smooth_noise(rng, size, 1.2 * scale)
    tex_gfp = _smooth_noise(rng, size, 2.0 * scale)
    tex_agp = _smooth_noise(rng, size, 1.5 * scale)

    # DNA: domed ellipse with chromatin texture.
    in_nuc = nuc_lab > 0
    dna = lut(dna_level)[nuc_lab] * (1.0 - 0.25 * np.minimum(rn, 1.0) ** 2)
    dna *= np.clip(1.0 + 0.18 * tex_dna, 0.3, None)
    dna = ndimage.gaussian_filter(dna, psf)

    # GFP: uniform concentrations per compartment with mild texture.
    gfp = np.where(in_nuc, lut(c_nuc)[nuc_lab], lut(c_cyto)[cyto_lab])
    gfp *= np.clip(1.0 + 0.12 * tex_gfp, 0.3, None)
    gfp = ndimage.gaussian_filter(gfp, psf)

    # AGP: cell body, bright cortex at every cell boundary, dim over the nucleus.
    edges = cell_lab != np.pad(cell_lab, 1, mode="edge")[:-2, 1:-1]
    edges |= cell_lab != np.pad(cell_lab, 1, mode="edge")[2:, 1:-1]
    edges |= cell_lab != np.pad(cell_lab, 1, mode="edge")[1:-1, :-2]
    edges |= cell_lab != np.pad(cell_lab, 1, mode="edge")[1:-1, 2:]
    edges &= cell_lab > 0
    to_edge = ndimage.distance_transform_edt(~edges)
    agp = lut(agp_level)[cell_lab] * (0.45 + 0.9 * np.exp(-to_edge / (1.5 * scale)))
    agp *= np.where(in_nuc, 0.55, 1.0) * np.clip(1.0 + 0.25 * tex_agp, 0.2, None)
    agp = ndimage.gaussian_filter(agp, psf)

    # Ground truth from the noiseless signal with the true masks (cells 1..n only).
    def per_cell(weights: np.ndarray | None, lab: np.ndarray) -> np.ndarray:
        sums = np.bincount(lab.ravel(), weights=weights, minlength=n_all + 1)
        return sums[1 : n + 1].astype(np.float64)

    labels = np.arange(1, n + 1)
    nuc_area, cyto_area = nuc_area[:n], cyto_area[:n]
    gfp_nuc_sum = per_cell(gfp.ravel(), nuc_lab)
    gfp_cyto_sum = per_cell(gfp.ravel(), cyto_lab)
    with np.errstate(divide="ignore", invalid="ignore"):
        cell_ratio = (gfp_nuc_sum / nuc_area) / (gfp_cyto_sum / cyto_area)
    cell_ratio[cyto_area == 0] = np.nan
    nuc_fraction = gfp_nuc_sum / (gfp_nuc_sum + gfp_cyto_sum)
    yy, xx = np.indices((size, size), dtype=np.float64)
    cy = per_cell(yy.ravel(), nuc_lab) / nuc_area
    cx = per_cell(xx.ravel(), nuc_lab) / nuc_area
    cells = pd.DataFrame(
        {
            "cell": labels.astype(np.int64),
            "x": cx,
            "y": cy,
            "nucleus_area_px": nuc_area.astype(np.int64),
            "cell_area_px": (nuc_area + cyto_area).astype(np.int64),
            "gfp_nuclear_fraction": nuc_fraction,
            "gfp_nuc_cyto_ratio": cell_ratio,
        }
    )

    raw = {}
    for ch, signal in ((1, dna), (2, gfp), (3, agp)):
        expected = (signal + _BACKGROUND[ch]) * illumination[ch]
        adu = rng.poisson(expected).astype(np.float32)  # shot noise (gain 1 ADU/e-)
        adu += CAMERA_OFFSET + _READ_NOISE * rng.standard_normal(adu.shape, dtype=np.float32)
        raw[ch] = np.clip(np.rint(adu), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return raw, cells


# --------------------------------------------------------------------------------------------
# Writing


def _write_image(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, photometric="minisblack")


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
