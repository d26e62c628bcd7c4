rule features:
    input:
        corrected="results/corrected/{plate}/{batch}",
        masks="results/masks/{seg}/{plate}/{batch}",
    output:
        retained("features", "results/features/{seg}/{plate}/{batch}.parquet"),
        provenance="results/provenance/{plate}/features/{seg}/{batch}.json",
    log:
        "logs/features/{seg}/{plate}/{batch}.log",
    benchmark:
        "logs/benchmark/features/{seg}/{plate}/{batch}.tsv"
    params:
        groups=config["features"]["groups"],
        options=config["features"]["options"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/features.py"
