"""Adding a method is one new module (with its schema) and one config section.

A copy of the repository gets ``wormflow/methods/brightness.py`` and ``brightness.schema.yaml`` —
a tiny learned method (one 3×3 convolution, global average pooling, a linear head, BCE) — and
nothing else; a config overlay enables it (beside the dark-pixel floor).  The whole workflow then
trains it, scores the collections with it, gathers, evaluates, summarises and reports it like the
built-in methods: no rule, script, trainer, scorer, evaluator, ledger or report code changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml
from workflow_helpers import DEMO_TINY, REPO, TINY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

MODULE = '''"""A test plug-in: the mean of a learned 3x3 filter response, through a logistic head."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import device_images
from ..transforms import normalize
from .base import Method, direct_calibration, sigmoid


class Brightness(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3))).flatten()


class BrightnessMethod(Method):
    name = "brightness"
    label = "Brightness probe (test plug-in)"
    short = "Bright"
    colour = "#e7298a"
    cpu_batch = 64
    feature_names = ("logit",)
    log_features = (False,)

    def build(self, cfg):
        return Brightness()

    def epoch_runner(self, model, opts, fit_set, dev_set, device, cfg, num_workers):
        data = device_images(fit_set.images, device)
        labels = torch.as_tensor(fit_set.labels, dtype=torch.float32, device=device)

        def run(epoch):
            model.train()
            total = 0.0
            for idx in torch.randperm(len(labels)).split(cfg["batch_size"]):
                loss = F.binary_cross_entropy_with_logits(model(normalize(data[idx])), labels[idx])
                opts["model"].zero_grad()
                loss.backward()
                opts["model"].step()
                total += loss.item() * len(idx)
            return {"train_loss": total / len(labels)}

        return run

    def outputs(self, model, x_u8, cfg):
        x = normalize(x_u8).to(next(model.parameters()).dtype)
        return {"features": model(x).float()[:, None]}

    def scores(self, features, combiner=None):
        return sigmoid(features[:, 0])

    def calibrate(self, features, dev_set, cfg, rule="robust", n_boot=200):
        return direct_calibration(self.scores(features), dev_set, cfg, None, rule, n_boot)


METHOD = BrightnessMethod()
'''

SCHEMA = """$schema: "https://json-schema.org/draft/2020-12/schema"
title: methods.brightness
x-wormflow: {seeded: true, gpu: false, code: [transforms.py]}
type: object
additionalProperties: false
required: [enabled, image_size, epochs, batch_size, lr, betas]
properties:
  enabled: {type: boolean}
  image_size: {type: integer, minimum: 8}
  epochs: {type: integer, minimum: 1}
  batch_size: {type: integer, minimum: 1}
  eval_batch_size: {type: integer, minimum: 1, default: 64}
  lr: {type: number, exclusiveMinimum: 0}
  betas: {type: array, items: {type: number}, minItems: 2, maxItems: 2}
"""


def _copy_repository(dst: Path) -> Path:
    """The repository's files (tracked and untracked, not ignored: no .venv, no results)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def test_a_fourth_method_is_one_module_and_one_config_section(tmp_path):
    repo = _copy_repository(tmp_path / "repo")
    (repo / "wormflow" / "methods" / "brightness.py").write_text(MODULE)
    (repo / "wormflow" / "methods" / "brightness.schema.yaml").write_text(SCHEMA)
    overlay = tmp_path / "brightness.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "methods": {
                    "vae": {"enabled": False},
                    "gan": {"enabled": False},
                    "resnet50": {"enabled": False},
                    "brightness": {
                        "enabled": True,
                        "image_size": 32,
                        "epochs": 3,
                        "batch_size": 8,
                        "lr": 0.01,
                        "betas": [0.9, 0.999],
                    },
                }
            }
        )
    )
    workdir = tmp_path / "run"
    workdir.mkdir()
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(workdir)]
    cmd += [
        "--profile",
        str(repo / "profiles" / "local"),
        "--cores",
        "2",
        "--configfile",
        str(TINY),
        str(DEMO_TINY),
        str(overlay),
    ]
    env = {**os.environ, "PYTHONPATH": str(repo)}  # the copy's package, in the head process and in every job
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]

    results = workdir / "results"
    assert (results / "models" / "brightness" / "seed0" / "model.pt").is_file()
    assert not (results / "models" / "vae").exists()
    with h5py.File(results / "batches" / "demo-batch-1" / "scores.h5", "r") as f:
        assert [str(m) for m in f.attrs["methods"]] == ["dark_pixels", "brightness"]  # config order
        assert f["brightness/score"].shape == f["images/ids"].shape
    metrics = json.loads((results / "eval" / "metrics.json").read_text())["methods"]
    assert metrics["brightness"]["display"]["label"] == "Brightness probe (test plug-in)"
    assert 0 <= metrics["brightness"]["metrics"]["auroc"] <= 1
    ledger = json.loads((results / "ledger.json").read_text())
    assert all("brightness" in b["methods"] for b in ledger["batches"])
    html = (results / "report.html").read_text()
    assert "Brightness probe (test plug-in)" in html and "#e7298a" in html
