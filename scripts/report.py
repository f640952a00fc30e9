"""Render results/report.html (self-contained, Jinja2 with autoescape) and its JSON sidecar."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.report import report_step
from wormflow.smk import run


def main(smk):
    report_step(
        metrics_path=smk.input.metrics,
        ledger_path=smk.input.ledger,
        test_scores_path=smk.input.test,
        test_store_paths=list(smk.input.test_stores),
        batch_scores_paths=list(smk.input.batches),
        batches=list(smk.params.batches),
        rejected_batches=list(smk.params.rejected),
        model_paths=list(smk.input.models),
        methods=list(smk.params.methods),
        config=smk.params.config,
        benchmarks_root=smk.params.benchmarks,
        out_html=smk.output.html,
        out_json=smk.output.json,
    )


run(snakemake, main)  # noqa: F821
