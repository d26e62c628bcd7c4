# The input and params functions of summary.smk's rules.
def manifest_files():
    return expand(output_of("ingest"), plate=list(IMAGE_PLATES))


def cellprofiler_feature_files():
    return expand(
        output_of("cellprofiler_features"),
        seg=CELLPROFILER_VERSION,
        plate=list(CELLPROFILER_PLATES),
    )
