rule profiles:
    input:
        features=batch_features,
        embeddings=batch_embeddings,
        platemap=platemap_of,
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
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
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
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
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
    threads: 1
    conda:
        "../envs/profiles.yaml"
    script:
        "../scripts/csv.py"
