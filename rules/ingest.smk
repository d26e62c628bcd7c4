rule ingest:
    input:
        images=plate_images,
        platemap=platemap_of,
    output:
        retained("manifest", "results/manifest/{plate}.parquet"),
        provenance="results/provenance/{plate}/ingest.json",
    log:
        "logs/ingest/{plate}.log",
    benchmark:
        "logs/benchmark/ingest/{plate}.tsv"
    params:
        root=plate_root,
        pattern=image_pattern,
        channels=config["channels"],
        extensions=config["images"]["extensions"],
        require_all_sites=config["images"]["require_all_sites"],
        wells_per_job=config["batching"]["wells_per_job"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    conda:
        "../envs/ingest.yaml"
    script:
        "../scripts/ingest.py"
