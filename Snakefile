# cellstrata: image-based profiling data levels, raw images -> per-well profiles.
# Wiring only: helpers live in rules/common.smk (what every rule needs), rules/targets.smk (what
# rule all asks for) and each rule's .smk; every computation in src/cellstrata.
from snakemake.utils import min_version

min_version("9.0")


# The example config, unless an experiment config is given with --configfile: then that one
# alone (merging the two would leak the example's plates and channels into the experiment).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/targets.smk"
include: "rules/ingest.smk"
include: "rules/qc.smk"
include: "rules/illumination.smk"
include: "rules/segment.smk"
include: "rules/features.smk"
include: "rules/cellprofiler.smk"
include: "rules/crops.smk"
include: "rules/embed.smk"
include: "rules/profiles.smk"
include: "rules/quality.smk"
include: "rules/plots.smk"
include: "rules/summary.smk"
include: "rules/provenance.smk"


# The HTML report's title page.
report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        final_outputs(),


# What a collaborator who pulled only the profiles asks for: `snakemake -n profiles_all`.
rule profiles_all:
    input:
        profile_files(),
