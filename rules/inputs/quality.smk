# The input and params functions of quality.smk's rules.
def version_cell_qc(wildcards):
    return _version_tables(wildcards.seg, "cell_qc")
