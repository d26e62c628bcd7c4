# The input and params functions of embed.smk's rules.
def embedding_model(wildcards):
    """The model file of the embed rule: an input, so a new model re-runs the jobs and the
    provenance record holds its MD5."""
    return config["features"]["embedding"]["model"]


def embedding_gpus(wildcards):
    """GPUs an embed job asks for: 1 with features.embedding.device cuda, else 0."""
    return int(config["features"]["embedding"]["device"] == "cuda")


def embedding_gres(wildcards):
    """The same request as Slurm GRES (profiles/slurm sends it as --gres; empty: none)."""
    return gpu_gres(embedding_gpus(wildcards))
