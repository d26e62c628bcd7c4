"""Data stewardship over the levels: provenance records, retention, DVC remotes, storage planning,
status."""
