include: "inputs/provenance.smk"


rule provenance:
    input:
        provenance_records(),
    output:
        "results/provenance.parquet",
    log:
        "logs/provenance.log",
    params:
        code=code_of("provenance.py"),
    threads: 1
    conda:
        "../envs/ingest.yaml"
    script:
        "../scripts/provenance.py"
