"""Measurement families of the features level (one module per CellProfiler module)."""
