include: "inputs/quality.smk"


rule quality:
    input:
        profiles=output_of("experiment", "feature_selected"),
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
        code=code_of("quality.py"),
    threads: 1
    resources:
        # measured: 326 MB peak, 2 s for 7 wells (benchmarks/rule_resources.py); mAP's
        # similarities grow with the square of the wells of a version: 1000 MB.
        mem_mb=job_memory(1500),
        runtime=job_runtime(20),
    conda:
        "../envs/profiles.yaml"
    script:
        "../scripts/quality.py"
