"""Decode one shard's images once into an HDF5 image store."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.pipeline import decode_shard_step
from wormflow.smk import run


def main(smk):
    decode_shard_step(
        smk.input.manifest,
        int(smk.wildcards.shard),
        smk.output[0],
        sizes=smk.params.sizes,
        threads=smk.threads,
        limits=smk.params.limits,
        fields=smk.params.fields,
        tiling=smk.params.tiling,
        hdf5=smk.config["hdf5"],  # how the store is compressed does not change its content
    )


run(snakemake, main)  # noqa: F821
