# wormflow: train, run and compare three worm-image analysis methods.
# See README.md; the rules live in rules/, the code in the wormflow package.
import os

from snakemake.utils import min_version

min_version("9.0")


# The default config sits beside this Snakefile, so the workflow runs from any working directory
# (snakemake -s /path/to/Snakefile --directory /scratch/run); overlays come with --configfile.
configfile: os.path.join(workflow.basedir, "config.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/score.smk"
include: "rules/report.smk"


onstart:
    remove_stale_temps()


onsuccess:
    prune_slurm_logs()


onerror:
    report_after_failure()
    prune_slurm_logs()


rule all:
    default_target: True
    input:
        get_final_output(),
