# The input and params functions of cellprofiler.smk's rules.
from cellstrata.singlecell.cellprofiler import source_files

CELLPROFILER_PLATE_NAMES = "|".join(re.escape(name) for name in CELLPROFILER_PLATES)


def cellprofiler_source(wildcards):
    return CELLPROFILER_PLATES[wildcards.plate]["cellprofiler"]


def cellprofiler_inputs(wildcards):
    """The CellProfiler files a conversion reads; none when the output is absent and only
    results were pulled (the features it made stand in, as manifests do for images)."""
    source = cellprofiler_source(wildcards)
    return source_files(source) if Path(source).exists() else []


def cellprofiler_plate_of(wildcards):
    return CELLPROFILER_PLATES[wildcards.plate].get("cellprofiler_plate")
