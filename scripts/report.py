"""Render results/report.html (self-contained, Jinja2 with autoescape) and its JSON sidecar."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from wormflow.report import report_step
from wormflow.smk import run


def main(smk):
    report_step(
        metrics_path=smk.input.metrics,
        gallery_path=smk.input.gallery,
        ledger_path=smk.input.ledger,
        methods=list(smk.params.methods),
        config=smk.params.config,
        out_html=smk.output.html,
        out_json=smk.output.json,
    )


run(snakemake, main)  # noqa: F821
