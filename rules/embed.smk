include: "inputs/embed.smk"


rule embed:
    input:
        store=output_of("crops", "store"),
        index=output_of("crops", "index"),
        model=embedding_model,
    output:
        retained("embeddings", "results/embeddings/{seg}/{plate}/{batch}.parquet"),
        provenance="results/provenance/{plate}/embed/{seg}/{batch}.json",
    log:
        "logs/embed/{seg}/{plate}/{batch}.log",
    benchmark:
        "logs/benchmark/embed/{seg}/{plate}/{batch}.tsv"
    params:
        format=config["features"]["embedding"]["format"],
        device=config["features"]["embedding"]["device"],
        batch_size=config["features"]["embedding"]["batch_size"],
        channels=config["features"]["embedding"]["channels"],
        normalize=config["features"]["embedding"]["normalize"],
        prefix=config["features"]["embedding"]["prefix"],
        code=code_of("embed.py"),
    threads: 2
    resources:
        # measured: 329 MB peak for 36 sites (a toy ONNX model; benchmarks/rule_resources.py).
        # A real model adds its weights and activations (features.embedding.batch_size crops),
        # not measured: 4000 MB (within 2 threads x 3,750 MB) and 2 s per site (50 ms a crop).
        mem_mb=job_memory(4000),
        runtime=job_runtime(10, seconds_per_site=2),
        gpu=embedding_gpus,
        gres=embedding_gres,
    conda:
        "../envs/embed.yaml"
    script:
        "../scripts/embed.py"
