rule illumination:
    input:
        manifest=output_of("ingest"),
        # The image root, not each image (why: rules/ingest.smk).
        images=image_root,
    output:
        retained("illumination", "results/illumination/{plate}/{channel}.tiff"),
        provenance="results/provenance/{plate}/illumination/{channel}.json",
    log:
        "logs/illumination/{plate}/{channel}.log",
    benchmark:
        "logs/benchmark/illumination/{plate}/{channel}.tsv"
    params:
        illumination=config["illumination"],
        code=code_of("illumination.py"),
    threads: 1
    resources:
        # measured: 194 MB peak for one channel of a plate of 45 sites of 1080², 0.02 s per
        # site (benchmarks/rule_resources.py); images are streamed, flat in plate size.
        mem_mb=job_memory(1000),
        runtime=job_runtime(10, seconds_per_site=0.1),
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/illumination.py"


rule correct:
    input:
        unpack(illumination_functions),
        manifest=output_of("ingest"),
        # The image root, not each image (why: rules/ingest.smk).
        images=image_root,
        qc=output_of("qc"),
    output:
        retained("corrected", directory("results/corrected/{plate}/{batch}")),
        provenance="results/provenance/{plate}/correct/{batch}.json",
    log:
        "logs/correct/{plate}/{batch}.log",
    benchmark:
        "logs/benchmark/correct/{plate}/{batch}.tsv"
    params:
        channels=CHANNELS,
        exclude=config["qc"]["exclude"],
        code=code_of("correct.py"),
    threads: 1
    resources:
        # measured: 237 MB peak for 36 sites of 1080² x 5 ch, 0.34 s per site
        # (benchmarks/rule_resources.py); one site at a time, flat in batch size.
        mem_mb=job_memory(1000),
        runtime=job_runtime(10, seconds_per_site=1),
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/correct.py"
