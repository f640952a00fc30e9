"""Write results/batches.tsv and results/ledger.json from the batch summaries."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.ledger import ledger_step
from wormflow.morning import clear_provisional
from wormflow.smk import run


def main(smk):
    ledger_step(
        list(smk.input.summaries),
        [tuple(r) for r in smk.params.rejected],
        dict(smk.params.runs),
        smk.input.test_manifest,
        smk.output.tsv,
        smk.output.json,
        deferred=[tuple(r) for r in smk.params.deferred],
        training=smk.params.training,
        seal=dict(smk.params.seal),
    )
    clear_provisional()  # the ledger is Snakemake's own again (see wormflow/morning.py)


run(snakemake, main)  # noqa: F821
