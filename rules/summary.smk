include: "inputs/summary.smk"


rule summary:
    input:
        manifests=manifest_files(),
        cellprofiler=cellprofiler_feature_files(),
        profiles=profile_files(),
    output:
        "results/summary.txt",
    log:
        "logs/summary.log",
    params:
        experiment=config["experiment"],
        retention=config["retention"],
        version=next(iter(SEGMENTATIONS)),
        # Every current version: batch files of theirs no current job makes are stale.
        versions=list(SEGMENTATIONS),
        code=code_of("summary.py"),
    threads: 1
    conda:
        "../envs/ingest.yaml"
    script:
        "../scripts/summary.py"
