"""Evaluate every method (all seeds, the floor among them) on the gathered test scores; select the galleries."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.evaluate import evaluate_step
from wormflow.smk import run


def main(smk):
    evaluate_step(
        smk.input.test,
        smk.params.models,
        list(smk.input.test_stores),
        smk.params.evaluation,
        smk.params.published,
        smk.params.gallery_size,
        smk.output.json,
        smk.output.csv,
        smk.output.gallery,
    )


run(snakemake, main)  # noqa: F821
