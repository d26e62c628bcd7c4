# The input and params functions of ingest.smk's rules.
from cellstrata.images.ingest import image_signature


def plate_image_signature(wildcards):
    """Names, sizes and times of a plate's images as one digest (rule ingest's params)."""
    return image_signature(plate_images(wildcards))


def image_pattern(wildcards):
    # Through a function: a literal regex like \d{2} would be read as a {wildcard}.
    return config["images"]["pattern"]
