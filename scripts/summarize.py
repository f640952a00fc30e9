"""Summarise one gathered batch for the ledger (counts, flagged shares, drift, agreement, quarantine, times)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.ledger import summarize_batch_step
from wormflow.smk import run


def main(smk):
    summarize_batch_step(
        smk.wildcards.batch,
        smk.input.scores,
        smk.input.manifest,
        dict(smk.params.models),
        smk.params.drift["ks_max"],
        smk.output.summary,
        thumbnails_out=smk.output.thumbnails,
        field_pattern=smk.params.field_pattern,
        thumbnail_width=smk.params.thumbnail_width,
    )


run(snakemake, main)  # noqa: F821
