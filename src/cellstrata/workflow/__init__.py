"""Workflow glue: what the Snakefile needs from the package (code digests, cluster profiles, job
logs)."""
