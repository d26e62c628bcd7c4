rule embed:
    input:
        store="results/crops/{seg}/{plate}/{batch}.h5",
        index="results/crops/{seg}/{plate}/{batch}.parquet",
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
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=embedding_gpus,
    conda:
        "../envs/embed.yaml"
    script:
        "../scripts/embed.py"
