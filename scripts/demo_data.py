"""Generate the synthetic demo data set (labeled split + batches)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.demo import generate_demo
from wormflow.smk import run


def main(smk):
    demo = smk.params.demo
    generate_demo(
        smk.params.out,
        seed=demo["seed"],
        size=demo["size"],
        n_train=demo["n_train"],
        n_dev=demo["n_dev"],
        n_test=demo["n_test"],
        batches=tuple(demo["batches"].items()),
    )


run(snakemake, main)  # noqa: F821
