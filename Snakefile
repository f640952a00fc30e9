# wormflow: train, run and compare three worm-image analysis methods.
# See README.md; the rules live in rules/, the code in the wormflow package.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/score.smk"
include: "rules/report.smk"


rule all:
    input:
        get_final_output(),
    default_target: True
