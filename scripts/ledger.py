"""Write results/batches.tsv and results/ledger.json from the batch summaries."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.ledger import ledger_step
from wormflow.smk import run


def main(smk):
    ledger_step(
        list(smk.input.summaries),
        [tuple(r) for r in smk.params.rejected],
        dict(smk.params.runs),
        smk.input.test_manifest,
        smk.output.tsv,
        smk.output.json,
    )


run(snakemake, main)  # noqa: F821
