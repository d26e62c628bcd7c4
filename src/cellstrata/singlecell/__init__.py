"""The single-cell levels: features measured on masks, crops, embeddings, and CellProfiler output
imported as features."""
