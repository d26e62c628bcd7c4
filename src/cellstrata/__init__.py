"""cellstrata: image-based profiling data levels, from raw images to per-well profiles."""

__version__ = "0.1.0"
