# The final outputs of every plate and version, the targets of rule all (and rule summary).
from cellstrata.config import PROFILE_STEPS
from cellstrata.levels import JOBS
from cellstrata.profiles.experiment import EXPERIMENT_STEPS
from cellstrata.profiles.quality import QUALITY_TABLES


def versions_of(plate):
    """Feature versions of a plate: the segmentation versions, or CellProfiler's one."""
    return [CELLPROFILER_VERSION] if plate in CELLPROFILER_PLATES else list(SEGMENTATIONS)


def profile_files():
    return [
        output_of("profiles", step).format(seg=seg, plate=plate)
        for plate in PLATES
        for seg in versions_of(plate)
        for step in PROFILE_STEPS
    ]


def experiment_files(tables=(*EXPERIMENT_STEPS, *QUALITY_TABLES)):
    """Experiment-level tables of every version: stacked profiles, consensus, quality."""
    patterns = {**JOBS["experiment"].outputs, **JOBS["quality"].outputs}
    return [patterns[table].format(seg=seg) for seg in EXPERIMENT_VERSIONS for table in tables]


def csv_files():
    """Gzipped CSV copies of the profile tables (plates and experiment), when profiles.csv
    asks for them."""
    if not config["profiles"]["csv"]:
        return []
    tables = profile_files() + experiment_files(EXPERIMENT_STEPS)
    return [path.removesuffix(".parquet") + ".csv.gz" for path in tables]


def figure_files():
    files = expand(
        "results/figures/{seg}/{figure}.png",
        seg=EXPERIMENT_VERSIONS,
        figure=["pca", "map", "dose_response"],
    )
    for plate in PLATES:
        files += expand(
            "results/figures/{seg}/{plate}/overview.png", seg=versions_of(plate), plate=plate
        )
    for plate in IMAGE_PLATES:
        files += [
            f"results/figures/{plate}/illumination.png",
            f"results/figures/{plate}/image_qc.png",
        ]
        files += expand(
            "results/figures/{seg}/{plate}/overlays.png", seg=SEGMENTATIONS, plate=plate
        )
    return files


def crop_files():
    if not config["crops"]["enabled"]:
        return []
    return [
        output_of("crops", output).format(seg=seg, plate=plate, batch=batch)
        for seg in SEGMENTATIONS
        for plate in IMAGE_PLATES
        for batch in batches_of(plate)
        for output in ("store", "index")
    ]


def final_outputs():
    # Enabled crops are targets: their one consumer, rule embed, runs only with a model.
    return (
        profile_files()
        + experiment_files()
        + csv_files()
        + figure_files()
        + crop_files()
        + [
            "results/summary.txt",
            "results/figures/storage_projection.png",
            "results/provenance.parquet",
        ]
    )
