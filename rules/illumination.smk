rule illumination:
    input:
        manifest="results/manifest/{plate}.parquet",
        images=channel_images,
    output:
        retained("illumination", "results/illumination/{plate}/{channel}.tiff"),
        provenance="results/provenance/{plate}/illumination/{channel}.json",
    log:
        "logs/illumination/{plate}/{channel}.log",
    benchmark:
        "logs/benchmark/illumination/{plate}/{channel}.tsv"
    params:
        illumination=config["illumination"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/illumination.py"


rule correct:
    input:
        unpack(illumination_functions),
        manifest="results/manifest/{plate}.parquet",
        qc="results/qc/{plate}.parquet",
        images=batch_images,
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/correct.py"
