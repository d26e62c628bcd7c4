# The input and params functions of segment.smk's rules.
from cellstrata.segment.params import cellpose_model_files


def segmentation_of(wildcards):
    return SEGMENTATIONS[wildcards.seg]


def segmentation_models(wildcards):
    """Model files of a cellpose version: inputs, so new weights at the same path re-run the
    job and its provenance record holds their MD5. Built-in models are no files here."""
    return cellpose_model_files(SEGMENTATIONS[wildcards.seg].get("cellpose"))


def segmentation_gpus(wildcards):
    """GPUs a segment job asks for: 1 for a cellpose version with gpu on, else 0."""
    params = SEGMENTATIONS[wildcards.seg]
    return int(params["method"] == "cellpose" and params["cellpose"]["gpu"])


def segmentation_gres(wildcards):
    """The same request as Slurm GRES (profiles/slurm sends it as --gres; empty: none)."""
    return gpu_gres(segmentation_gpus(wildcards))
