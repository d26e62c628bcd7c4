rule features:
    input:
        corrected="results/corrected/{plate}/{batch}",
        masks="results/masks/{plate}/{batch}",
    output:
        retained("features", "results/features/{plate}/{batch}.parquet"),
    log:
        "logs/features/{plate}/{batch}.log",
    benchmark:
        "logs/benchmark/features/{plate}/{batch}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/features.py"
