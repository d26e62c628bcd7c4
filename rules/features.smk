rule features:
    input:
        corrected=output_of("correct"),
        masks=output_of("segment"),
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
        code=code_of("features.py"),
    threads: 1
    resources:
        # measured: 484 MB peak for 36 sites of 1080² x 5 ch (40 cells per site), 1.4 s per
        # site (benchmarks/rule_resources.py); flat in batch size. Time grows with the cells
        # of a site (about 30 ms a cell): 5 s per site covers about 150 cells per site.
        mem_mb=job_memory(1400),
        runtime=job_runtime(10, seconds_per_site=5),
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/features.py"
