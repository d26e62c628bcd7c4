rule summary:
    input:
        manifests=expand("results/manifest/{plate}.parquet", plate=list(PLATES)),
        profiles=profile_files(),
    output:
        "results/summary.txt",
    log:
        "logs/summary.log",
    conda:
        "../envs/ingest.yaml"
    threads: 1
    params:
        experiment=config["experiment"],
        retention=config["retention"],
    script:
        "../scripts/summary.py"
