rule qc:
    input:
        manifest=output_of("ingest"),
        # The image root, not each image (why: rules/ingest.smk).
        images=image_root,
    output:
        retained("qc", "results/qc/{plate}.parquet"),
        provenance="results/provenance/{plate}/qc.json",
    log:
        "logs/qc/{plate}.log",
    benchmark:
        "logs/benchmark/qc/{plate}.tsv"
    params:
        thresholds=config["qc"]["thresholds"],
        code=code_of("qc.py"),
    threads: 1
    resources:
        # measured: 186 MB peak for a plate of 45 sites of 1080² x 5 ch, 0.12 s per site
        # (benchmarks/rule_resources.py); one site at a time, flat in plate size.
        mem_mb=job_memory(1000),
        runtime=job_runtime(10, seconds_per_site=0.4),
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/qc.py"
