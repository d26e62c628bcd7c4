include: "inputs/cellprofiler.smk"


# Plates given as CellProfiler output (plates[].cellprofiler) enter at the features level: one
# job per plate converts the CSV folder or SQLite file with CytoTable to the single-cell layout
# of rule features, as version {seg} = "cellprofiler" and the one batch "all"
# (CELLPROFILER_VERSION and CELLPROFILER_BATCH in cellstrata.config), so rule profiles runs on
# it unchanged.
rule cellprofiler_features:
    input:
        cellprofiler_inputs,
    output:
        retained("features", "results/features/{seg}/{plate}/all.parquet"),
        provenance="results/provenance/{plate}/features/{seg}/all.json",
    log:
        "logs/features/{seg}/{plate}/all.log",
    benchmark:
        "logs/benchmark/features/{seg}/{plate}/all.tsv"
    params:
        source=cellprofiler_source,
        cellprofiler_plate=cellprofiler_plate_of,
        options=config["cellprofiler"],
        code=code_of("cellprofiler.py"),
    threads: 2
    resources:
        # measured: 362 MB peak, 5 s on a 4 MB SQLite (NF1, benchmarks/rule_resources.py);
        # CytoTable's memory and time grow with the file, which is GBs for a real plate:
        # 4000 MB (within 2 threads x 3,750 MB) and an hour, not sized from the measurement.
        mem_mb=job_memory(4000),
        runtime=job_runtime(60),
    wildcard_constraints:
        seg=CELLPROFILER_VERSION,
        plate=CELLPROFILER_PLATE_NAMES,
    conda:
        "../envs/cellprofiler.yaml"
    script:
        "../scripts/cellprofiler.py"
