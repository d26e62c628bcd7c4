include: "inputs/profiles.smk"


rule profiles:
    input:
        features=batch_features,
        embeddings=batch_embeddings,
        platemap=platemap_of,
        manifest=manifest_of,
    output:
        aggregated=retained("profiles", "results/profiles/{seg}/{plate}/{plate}_aggregated.parquet"),
        annotated=retained("profiles", "results/profiles/{seg}/{plate}/{plate}_annotated.parquet"),
        normalized=retained("profiles", "results/profiles/{seg}/{plate}/{plate}_normalized.parquet"),
        feature_selected=retained(
            "profiles",
            "results/profiles/{seg}/{plate}/{plate}_feature_selected.parquet",
        ),
        cell_qc=retained("profiles", "results/profiles/{seg}/{plate}/{plate}_cell_qc.parquet"),
        nonfinite=retained("profiles", "results/profiles/{seg}/{plate}/{plate}_nonfinite.parquet"),
        platemap=retained("profiles", "results/profiles/{seg}/{plate}/{plate}_platemap.parquet"),
        normalization=retained(
            "profiles",
            "results/profiles/{seg}/{plate}/{plate}_normalization.parquet",
        ),
        provenance="results/provenance/{plate}/profiles/{seg}.json",
    log:
        "logs/profiles/{seg}/{plate}.log",
    benchmark:
        "logs/benchmark/profiles/{seg}/{plate}.tsv"
    params:
        platemap=config["platemap"],
        controls=config["controls"],
        options=PLATE_PROFILE_OPTIONS,
        code=code_of("profiles.py"),
    threads: 1
    resources:
        # measured: 685 MB peak, 9-50 s for plates of 5 and 2 wells x 9 sites
        # (benchmarks/rule_resources.py); 1,322 MB, 50 s for 1,000,000 cells x 1,000 features
        # (benchmarks/aggregate_scale.py): aggregation streams column blocks. The 50 s are
        # feature selection: correlation_threshold visits every feature pair above 0.9 in
        # Python, up to 2,400² / 2 pairs (all of them on a 2-well plate).
        mem_mb=job_memory(3000),
        runtime=job_runtime(20),
    conda:
        "../envs/profiles.yaml"
    script:
        "../scripts/profiles.py"


rule experiment:
    input:
        normalized=version_normalized,
    output:
        normalized=retained("profiles", "results/experiment/{seg}/normalized.parquet"),
        feature_selected=retained("profiles", "results/experiment/{seg}/feature_selected.parquet"),
        consensus=retained("profiles", "results/experiment/{seg}/consensus.parquet"),
        provenance="results/provenance/experiment/{seg}/experiment.json",
    log:
        "logs/experiment/{seg}.log",
    benchmark:
        "logs/benchmark/experiment/{seg}.tsv"
    params:
        treatment_columns=config["platemap"]["treatment_columns"],
        feature_select_operations=config["profiles"]["feature_select_operations"],
        consensus_operation=config["profiles"]["consensus_operation"],
        code=code_of("experiment.py"),
    threads: 1
    resources:
        # measured: 678 MB peak, 49 s for 7 wells (benchmarks/rule_resources.py); the stacked
        # table is wells x features (10 plates x 384 wells x 2,400 features: 74 MB), and
        # feature selection dominates the time as in rule profiles.
        mem_mb=job_memory(2000),
        runtime=job_runtime(20),
    conda:
        "../envs/profiles.yaml"
    script:
        "../scripts/experiment.py"


# profiles.csv: a gzipped CSV copy of any profile table, for tools that read no Parquet.
rule csv:
    input:
        "results/{table}.parquet",
    output:
        "results/{table}.csv.gz",
    log:
        "logs/csv/{table}.log",
    params:
        code=code_of("csv.py"),
    threads: 1
    conda:
        "../envs/profiles.yaml"
    script:
        "../scripts/csv.py"
