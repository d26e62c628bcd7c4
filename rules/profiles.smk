rule profiles:
    input:
        features=batch_features,
        platemap=platemap_of,
    output:
        aggregated=retained(
            "profiles", "results/profiles/{plate}/{plate}_aggregated.parquet"
        ),
        annotated=retained(
            "profiles", "results/profiles/{plate}/{plate}_annotated.parquet"
        ),
        normalized=retained(
            "profiles", "results/profiles/{plate}/{plate}_normalized.parquet"
        ),
        feature_selected=retained(
            "profiles", "results/profiles/{plate}/{plate}_feature_selected.parquet"
        ),
        provenance="results/provenance/{plate}/profiles.json",
    log:
        "logs/profiles/{plate}.log",
    benchmark:
        "logs/benchmark/profiles/{plate}.tsv"
    conda:
        "../envs/profiles.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        platemap=config["platemap"],
        controls=config["controls"],
        options=config["profiles"],
    script:
        "../scripts/profiles.py"
