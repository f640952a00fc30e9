"""Score one shard's image store with every model (one score part per method and seed)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.pipeline import score_shard_step
from wormflow.smk import run


def main(smk):
    score_shard_step(
        smk.input.store,
        {m: {int(s): p for s, p in seeds.items()} for m, seeds in smk.params.models.items()},
        smk.output[0],
        batch_size=smk.config["scoring"]["batch_size"],
        device=smk.config["scoring"]["device"],
        shard_size=smk.config["shard_size"],
        hdf5=smk.config["hdf5"],
        tiling=smk.params.tiling,
    )


run(snakemake, main)  # noqa: F821
