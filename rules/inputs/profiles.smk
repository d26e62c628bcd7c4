# The input and params functions of profiles.smk's rules.
def platemap_of(wildcards):
    return PLATES[wildcards.plate]["platemap"]


def manifest_of(wildcards):
    """The image manifest of an image plate (which wells were imaged, so that a well without
    cells is reported as such); none for a CellProfiler plate."""
    if wildcards.plate in CELLPROFILER_PLATES:
        return []
    return [output_of("ingest").format(plate=wildcards.plate)]


def batch_features(wildcards):
    return expand(
        output_of("features"),
        seg=wildcards.seg,
        plate=wildcards.plate,
        batch=batches_of(wildcards.plate),
    )


def batch_embeddings(wildcards):
    """The embedding tables the profiles of a version join to its features; none when
    features.embedding is off or for CellProfiler plates (they have no crops)."""
    if not embedding_enabled(config) or wildcards.plate in CELLPROFILER_PLATES:
        return []
    return expand(
        output_of("embed"),
        seg=wildcards.seg,
        plate=wildcards.plate,
        batch=batches_of(wildcards.plate),
    )


# The options of the per-plate profile chain (build_profiles); the rest of the profiles
# block is about the experiment level and the CSV copies.
PLATE_PROFILE_OPTIONS = {
    key: value
    for key, value in config["profiles"].items()
    if key not in ("consensus_operation", "csv")
}


def version_normalized(wildcards):
    """The normalized profiles of every plate of a version (stacked by rule experiment)."""
    return _version_tables(wildcards.seg, "normalized")
