include: "inputs/ingest.smk"


# The raw images are no inputs one by one: 17,280 paths a 384-well plate, checked by Snakemake
# in every job downstream, made a 10-plate DAG take 47 s (benchmarks/dag_scale.py). Their
# names, sizes and times enter as params.image_files instead, so a changed image still re-runs
# ingest and all after it; the provenance record lists each image with its MD5.
rule ingest:
    input:
        # The image root itself (here and in qc, illumination, correct; its time ignored):
        # absent in a collaborator's clone that pulled results only, so no image level is
        # rebuilt there. No platemap: ingest does not read it (rule profiles does).
        images=image_root,
    output:
        retained("manifest", "results/manifest/{plate}.parquet"),
        provenance="results/provenance/{plate}/ingest.json",
    log:
        "logs/ingest/{plate}.log",
    benchmark:
        "logs/benchmark/ingest/{plate}.tsv"
    params:
        image_files=plate_image_signature,
        root=plate_root,
        pattern=image_pattern,
        channels=config["channels"],
        extensions=config["images"]["extensions"],
        require_all_sites=config["images"]["require_all_sites"],
        wells_per_job=config["batching"]["wells_per_job"],
        code=code_of("ingest.py"),
    threads: 1
    resources:
        # measured: 133 MB peak for a plate of 45 sites x 5 ch, 0.02 s per site
        # (benchmarks/rule_resources.py); file names and TIFF headers, flat in plate size.
        mem_mb=job_memory(900),
        runtime=job_runtime(10, seconds_per_site=0.1),
    conda:
        "../envs/ingest.yaml"
    script:
        "../scripts/ingest.py"
