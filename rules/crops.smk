rule crops:
    input:
        corrected=output_of("correct"),
        masks=output_of("segment"),
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
        code=code_of("crops.py"),
    threads: 1
    resources:
        # measured: 262 MB peak for 36 sites of 1080² x 5 ch, 96 px crops, 0.2 s per site
        # (benchmarks/rule_resources.py); one site at a time, flat in batch size.
        mem_mb=job_memory(1100),
        runtime=job_runtime(10, seconds_per_site=1),
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/crops.py"
