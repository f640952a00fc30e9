"""Write results/batches.tsv: one row per imaging batch (counts, flagged shares, drift, time)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.ledger import ledger_step
from wormflow.smk import run


def main(smk):
    ledger_step(
        list(smk.params.batches),
        list(smk.input.batches),
        list(smk.input.manifests),
        list(smk.input.models),
        list(smk.params.methods),
        list(smk.params.rejected),
        smk.params.drift["ks_max"],
        smk.params.benchmarks,
        smk.output[0],
    )


run(snakemake, main)  # noqa: F821
