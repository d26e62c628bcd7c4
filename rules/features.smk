rule features:
    input:
        corrected="results/corrected/{plate}/{batch}",
        masks="results/masks/{plate}/{batch}",
    output:
        retained("features", "results/features/{plate}/{batch}.parquet"),
        provenance="results/provenance/{plate}/features/{batch}.json",
    log:
        "logs/features/{plate}/{batch}.log",
    benchmark:
        "logs/benchmark/features/{plate}/{batch}.tsv"
    conda:
        "../envs/images.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    script:
        "../scripts/features.py"
