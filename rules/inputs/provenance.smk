# The input and params functions of provenance.smk's rules.
from cellstrata.levels import LEVEL_DECLARATIONS, expand_pattern, plate_level_versions

# Which plates a level's job runs for (cellstrata.levels.Job.plates).
JOB_PLATES = {"image": IMAGE_PLATES, "cellprofiler": CELLPROFILER_PLATES, "all": PLATES}


def provenance_records():
    """The provenance record of every job the workflow runs, from the levels' declarations."""
    records = []
    for level in LEVEL_DECLARATIONS:
        # Crops are built only when enabled (plate_level_versions lists them regardless, for
        # the storage plan and status).
        if level.name == "crops" and not config["crops"]["enabled"]:
            continue
        for job in level.jobs:
            if job.plates == "experiment":
                records += expand_pattern(job.provenance, seg=EXPERIMENT_VERSIONS)
                continue
            for plate in JOB_PLATES[job.plates]:
                records += expand_pattern(
                    job.provenance,
                    plate=[plate],
                    channel=CHANNELS,
                    seg=plate_level_versions(config, plate, level.name),
                    batch=batches_of(plate),
                )
    return records
