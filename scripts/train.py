"""Train one method for one seed; resumes from resume.pt after an interruption."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # noqa: F821 - the repository's package, also in --sdm conda envs

from pathlib import Path

from wormflow.data import load_split
from wormflow.decision import DEFAULT_THRESHOLD_RULE, N_BOOT
from wormflow.smk import run
from wormflow.train import train


def main(smk):
    cfg = dict(smk.params.cfg)
    training = smk.config["training"]  # device, workers, logging: how it runs, not what it learns
    calibration = smk.config.get("calibration", {})  # how the dev threshold is chosen (config.yaml)
    size = cfg["image_size"]
    train(
        smk.params.method,
        cfg,
        load_split(smk.input.train, size),
        load_split(smk.input.dev, size),
        Path(smk.output.model).parent,
        seed=int(smk.params.seed),
        device=training["device"],
        num_workers=training["num_workers"],
        deterministic=training["deterministic"],
        data_digest=smk.params.data,
        code_digest=smk.params.code,
        tensorboard=training["tensorboard"],
        checkpoint_interval_s=training.get("checkpoint_interval_s", 0),
        threshold_rule=calibration.get("threshold_rule", DEFAULT_THRESHOLD_RULE),
        n_boot=int(calibration.get("n_boot", N_BOOT)),
        field_tile=int(smk.config["tiling"]["tile"]),  # fields are cut into tiles of the training patches' side
    )


run(snakemake, main)  # noqa: F821
