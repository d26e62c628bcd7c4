rule segment:
    input:
        "results/corrected/{plate}/{batch}",
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
        gpu=segmentation_gpus,
    conda:
        "../envs/images.yaml"
    script:
        "../scripts/segment.py"
