"""cellstrata: image-based profiling data levels, from raw images to per-well profiles.

The public API, for notebooks (see the README's *Python API*):

- :func:`segment_site`: nuclei, cells and cytoplasm of one site, from arrays;
- :func:`measure_site`: single-cell features of one site, from arrays and masks;
- :func:`plate_profiles`: a plate's per-well profiles, from a single-cell table and its
  platemap;
- :func:`read_level`: a level of a plate (a table, or the files of an image level) from a
  workspace.

Each is imported from its module on first use: importing ``cellstrata`` (every workflow job
does) loads none of the subpackages.
"""

from cellstrata.lazy import lazy_exports

__version__ = "0.1.0"

#: Public name -> the module defining it.
_API = {
    "segment_site": "cellstrata.segment.batch",
    "measure_site": "cellstrata.singlecell.features",
    "plate_profiles": "cellstrata.profiles.aggregate",
    "read_level": "cellstrata.stewardship.read",
}
__all__ = ["__version__", *_API]
__getattr__, __dir__ = lazy_exports(__name__, _API)
