rule provenance:
    input:
        provenance_records(),
    output:
        "results/provenance.parquet",
    log:
        "logs/provenance.log",
    conda:
        "../envs/ingest.yaml"
    threads: 1
    script:
        "../scripts/provenance.py"
