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
        options=config["profiles"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/profiles.yaml"
    script:
        "../scripts/profiles.py"
