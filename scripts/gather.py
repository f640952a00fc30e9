"""Concatenate a collection's shard stores and score shards into scores.h5."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.pipeline import gather_step
from wormflow.smk import run


def main(smk):
    coll = smk.wildcards.coll
    gather_step(
        smk.input.manifest,
        list(smk.input.stores),
        {m: list(paths) for m, paths in smk.params.score_map.items()},
        smk.output[0],
        shard_size=smk.config["shard_size"],
        hdf5=smk.config["hdf5"],
        batch=coll.split("/", 1)[1],
    )


run(snakemake, main)  # noqa: F821
