"""Evaluate every method (and the dark-pixel baseline) on the labeled test split."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.evaluate import evaluate_step
from wormflow.smk import run


def main(smk):
    evaluate_step(
        smk.params.seed_scores,
        smk.params.models,
        list(smk.input.dev_stores),
        list(smk.input.test_stores),
        smk.params.evaluation,
        smk.params.published,
        smk.output.json,
        smk.output.csv,
    )


run(snakemake, main)  # noqa: F821
