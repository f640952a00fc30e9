"""List a collection's files, hash their contents and assign shards."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.pipeline import manifest_step
from wormflow.smk import run


def main(smk):
    manifest_step(
        smk.params.root,
        smk.output[0],
        labeled=smk.params.labeled,
        shard_size=smk.params.shard_size,
        fields=smk.params.fields,
    )


run(snakemake, main)  # noqa: F821
