"""Concatenate a collection's shard stores and score parts into scores.h5."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.pipeline import gather_step
from wormflow.smk import run


def main(smk):
    gather_step(
        smk.input.manifest,
        list(smk.input.stores),
        list(smk.input.indexes),
        smk.output[0],
        methods=list(smk.params.methods),
        shard_size=smk.config["shard_size"],
        hdf5=smk.config["hdf5"],
        batch=smk.wildcards.coll.split("/", 1)[1],
    )


run(snakemake, main)  # noqa: F821
