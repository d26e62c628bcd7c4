rule segment:
    input:
        "results/corrected/{plate}/{batch}",
    output:
        retained("masks", directory("results/masks/{plate}/{batch}")),
        provenance="results/provenance/{plate}/segment/{batch}.json",
    log:
        "logs/segment/{plate}/{batch}.log",
    benchmark:
        "logs/benchmark/segment/{plate}/{batch}.tsv"
    conda:
        "../envs/images.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        nuclei_channel=config["segmentation"]["nuclei_channel"],
        cell_channel=config["segmentation"]["cell_channel"],
        nuclei=config["segmentation"]["nuclei"],
        cells=config["segmentation"]["cells"],
    script:
        "../scripts/segment.py"
