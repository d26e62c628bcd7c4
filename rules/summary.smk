include: "inputs/summary.smk"


rule summary:
    input:
        manifests=manifest_files(),
        cellprofiler=cellprofiler_feature_files(),
        profiles=profile_files(),
    output:
        summary="results/summary.txt",
        # The storage cost month by month, the retention schedules applied.
        projection=report(
            "results/figures/storage_projection.png",
            caption="../report/storage_projection.rst",
            category="Storage",
            labels={"figure": "storage cost by month"},
        ),
    log:
        "logs/summary.log",
    params:
        experiment=config["experiment"],
        retention=config["retention"],
        version=next(iter(SEGMENTATIONS)),
        # Every current version: batch files of theirs no current job makes are stale.
        versions=list(SEGMENTATIONS),
        months=config["report"]["storage_months"],
        code=code_of("summary.py"),
    threads: 1
    conda:
        # matplotlib: the storage-cost figure
        "../envs/profiles.yaml"
    script:
        "../scripts/summary.py"
