include: "inputs/segment.smk"


rule segment:
    input:
        output_of("correct"),
        models=segmentation_models,
    output:
        retained("masks", directory("results/masks/{seg}/{plate}/{batch}")),
        provenance="results/provenance/{plate}/segment/{seg}/{batch}.json",
    log:
        "logs/segment/{seg}/{plate}/{batch}.log",
    benchmark:
        "logs/benchmark/segment/{seg}/{plate}/{batch}.tsv"
    params:
        segmentation=segmentation_of,
        code=code_of("segment.py"),
    threads: 1
    resources:
        # measured (classical): 366 MB peak for 36 sites of 1080² x 5 ch, 1.3 s per site
        # (benchmarks/rule_resources.py); one site at a time, flat in batch size. cellpose
        # (torch and its model) is not measured here.
        mem_mb=job_memory(1200),
        runtime=job_runtime(10, seconds_per_site=4),
        gpu=segmentation_gpus,
        gres=segmentation_gres,
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/segment.py"
