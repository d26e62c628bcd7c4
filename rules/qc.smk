rule qc:
    input:
        manifest="results/manifest/{plate}.parquet",
        images=plate_images,
    output:
        retained("qc", "results/qc/{plate}.parquet"),
        provenance="results/provenance/{plate}/qc.json",
    log:
        "logs/qc/{plate}.log",
    benchmark:
        "logs/benchmark/qc/{plate}.tsv"
    params:
        thresholds=config["qc"]["thresholds"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/qc.py"
