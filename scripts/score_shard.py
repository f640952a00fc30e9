"""Score one shard's image store with one trained method."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.pipeline import score_shard_step
from wormflow.smk import run


def main(smk):
    score_shard_step(
        smk.input.store,
        smk.input.model,
        smk.output[0],
        batch_size=smk.params.scoring["batch_size"],
        device=smk.params.scoring["device"],
        shard_size=smk.params.shard_size,
        hdf5=smk.params.hdf5,
    )


run(snakemake, main)  # noqa: F821
