rule quality:
    input:
        profiles="results/experiment/{seg}/feature_selected.parquet",
        annotated=version_annotated,
        cell_qc=version_cell_qc,
    output:
        map=retained("profiles", "results/experiment/{seg}/map.parquet"),
        zprime=retained("profiles", "results/experiment/{seg}/zprime.parquet"),
        cell_counts=retained("profiles", "results/experiment/{seg}/cell_counts.parquet"),
        provenance="results/provenance/experiment/{seg}/quality.json",
    log:
        "logs/quality/{seg}.log",
    benchmark:
        "logs/benchmark/quality/{seg}.tsv"
    params:
        treatment_columns=config["platemap"]["treatment_columns"],
        readout=READOUT,
        map_options=config["quality"]["map"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/profiles.yaml"
    script:
        "../scripts/quality.py"
