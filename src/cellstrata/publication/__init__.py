"""Publication of the levels to public storage solutions: FAIR packages as Workflow Run
RO-Crates (publish: package, crate, leaks), the Zenodo deposit (zenodo), OME-Zarr plates for
IDR and image viewers (omezarr). Everything here obeys the data strategy's access rules
(:mod:`cellstrata.stewardship.origin`): only what is public on the day leaves."""
