rule crops:
    input:
        corrected="results/corrected/{plate}/{batch}",
        masks="results/masks/{seg}/{plate}/{batch}",
    output:
        store=retained("crops", "results/crops/{seg}/{plate}/{batch}.h5"),
        index=retained("crops", "results/crops/{seg}/{plate}/{batch}.parquet"),
        provenance="results/provenance/{plate}/crops/{seg}/{batch}.json",
    log:
        "logs/crops/{seg}/{plate}/{batch}.log",
    benchmark:
        "logs/benchmark/crops/{seg}/{plate}/{batch}.tsv"
    params:
        size=config["crops"]["size"],
        compartment=config["crops"]["compartment"],
        mask_channel=config["crops"]["mask_channel"],
        mask_neighbours=config["crops"]["mask_neighbours"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/crops.py"
