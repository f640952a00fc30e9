"""Training any method, with resumable checkpoints.

One entry point, :func:`train`, for every method; what is specific to a method — its network,
optimisers, epochs, which images it learns from, early stopping and how it fits its score and
threshold on dev — comes from its module (:mod:`wormflow.methods`).

* Seeded (``seed``); the device is chosen automatically (CUDA with bf16 autocast and
  channels_last when present, CPU otherwise).
* After every epoch (or, with ``checkpoint_interval_s``, at most that often: for sub-second
  epochs on a GPU the write would dominate) a resume checkpoint (``resume.pt``: models,
  optimisers, epoch, RNG states, history, early-stopping state, config and package version) is
  written atomically.  A run that is killed resumes from it and produces the same weights as an
  uninterrupted run (same seed, CPU; the data order comes from the saved RNG state).  A
  checkpoint written for a different config, seed, data or code is ignored.
* ``history.csv`` (one row per epoch) and TensorBoard scalars are written as the run goes.
* At the end, the dev split is scored with the very code that scores batches
  (:mod:`wormflow.scoring`), the method calibrates its score and threshold on it
  (:meth:`Method.calibrate`), and the :class:`~wormflow.artifact.Artifact` ``model.pt`` is
  written; ``resume.pt`` is then removed.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .artifact import Artifact
from .atomic import atomic_path, atomic_write_text
from .data import LabeledImages
from .decision import DEFAULT_THRESHOLD_RULE, N_BOOT, THRESHOLD_RULES
from .digest import json_digest
from .methods import get as get_method
from .runtime import rng_state, seed_everything, select_device, set_rng_state
from .scoring import Scorer, batches
from .tiling import map_threshold

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- resume state and history


class ResumeState:
    """The resume checkpoint of one training run (``resume.pt``)."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        self.fingerprint = fingerprint

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt checkpoint: start over, loudly
            log.warning("ignoring unreadable resume checkpoint %s: %s", self.path, exc)
            return None
        if state.get("fingerprint") != self.fingerprint:
            log.warning("ignoring resume checkpoint %s: written for another config, seed, data or code", self.path)
            return None
        return state

    def save(self, state: dict) -> None:
        with atomic_path(self.path, durable=False) as tmp:  # a lost resume file only means starting over
            torch.save({**state, "fingerprint": self.fingerprint, "package_version": __version__}, tmp)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class History:
    """Per-epoch rows mirrored to ``history.csv`` and TensorBoard."""

    def __init__(self, csv_path: Path, tb_dir: Path | None, rows: list[dict]):
        self.csv_path = csv_path
        self.rows = list(rows)
        self.tb = None
        if tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(tb_dir))
            for row in self.rows:  # replay resumed epochs (the directory is recreated by each run)
                self._tb_row(row)
        self._write_csv()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._tb_row(row)
        self._write_csv()

    def _tb_row(self, row: dict) -> None:
        if self.tb is None:
            return
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                self.tb.add_scalar(k, v, row["epoch"])
        self.tb.flush()

    def _write_csv(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys or ["epoch"])
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.csv_path, buf.getvalue())

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------- epochs


# --------------------------------------------------------------------------- the driver


def _model_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train(
    method: str,
    cfg: dict,
    train_set: LabeledImages,
    dev_set: LabeledImages,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    device: str = "auto",
    num_workers: int = 0,
    deterministic: bool = False,
    data_digest: str = "",
    code_digest: str = "",
    tensorboard: bool = True,
    checkpoint_interval_s: float = 0.0,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    threshold_rule: str = DEFAULT_THRESHOLD_RULE,
    n_boot: int = N_BOOT,
    field_tile: int = 64,
) -> Artifact:
    """Train ``method`` (resuming if possible) and write ``model.pt``; return the :class:`Artifact`.

    ``threshold_rule`` (``"robust"`` or ``"f1max"``) and ``n_boot`` choose the dev threshold
    (:func:`wormflow.decision.choose_threshold`); the artifact records them (``threshold_rule`` in
    words, ``extra["calibration"]`` as given).  A method with a per-pixel field map also gets its map
    threshold, chosen on the dev patches at the fields' tile size ``field_tile``
    (:func:`wormflow.tiling.map_threshold`; ``extra["field_map"]``).
    """
    if threshold_rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {threshold_rule!r} (known: {', '.join(THRESHOLD_RULES)})")
    spec = get_method(method)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev_ = select_device(device)
    spec.check_ready(cfg)
    seed_everything(seed, deterministic)
    model, weights_init = spec.initial_model(cfg)
    model = model.to(dev_).to(memory_format=torch.channels_last)
    opts = spec.optimizers(model, cfg)
    fit_set = spec.training_images(train_set)
    if len(fit_set.labels) == 0:
        raise ValueError(f"{method}: no training images")

    fingerprint = json_digest({"method": method, "cfg": cfg, "seed": seed, "data": data_digest, "code": code_digest})
    resume = ResumeState(out / "resume.pt", fingerprint)
    state = resume.load()
    extra = {"best_loss": float("inf"), "best_epoch": -1, "bad_epochs": 0, "train_time_s": 0.0, "stopped_early": False}
    start_epoch, rows = 0, []
    best_state = None
    if state is not None:
        model.load_state_dict(state["model"])
        for name, opt in opts.items():
            opt.load_state_dict(state["optimizers"][name])
        set_rng_state(state["rng"])
        start_epoch, rows, extra = state["epoch"], state["history"], state["extra"]
        best_state = state.get("best_model")
        log.info("%s: resuming after epoch %d from %s", method, start_epoch, resume.path)
    history = History(out / "history.csv", out / "tensorboard" if tensorboard else None, rows)

    n_epochs = spec.n_epochs(cfg)
    patience = spec.patience(cfg)
    runner = spec.epoch_runner(model, opts, fit_set, dev_set, dev_, cfg, num_workers) if n_epochs else None
    epoch = start_epoch
    last_save = time.monotonic()
    while epoch < n_epochs and not extra["stopped_early"]:
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, **runner(epoch)}
        dt = time.perf_counter() - t0
        extra["train_time_s"] += dt
        row["seconds"] = round(dt, 3)
        row["images_per_s"] = round(len(fit_set.labels) / dt, 1) if dt > 0 else float("nan")
        if patience is not None:
            best_state = _early_stopping(extra, row, model, best_state, epoch, patience)
        history.add(row)
        epoch += 1
        log.info("%s epoch %d/%d %s", method, epoch, n_epochs, {k: v for k, v in row.items() if k != "epoch"})
        if time.monotonic() - last_save >= checkpoint_interval_s or epoch == n_epochs or extra["stopped_early"]:
            last_save = time.monotonic()
            resume.save(
                {
                    "epoch": epoch,
                    "model": _model_state(model),
                    "optimizers": {k: o.state_dict() for k, o in opts.items()},
                    "rng": rng_state(),
                    "history": history.rows,
                    "extra": extra,
                    "best_model": best_state,
                    "config": cfg,
                    "seed": seed,
                }
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    history.close()
    if best_state is not None:
        model.load_state_dict(best_state)

    calibration, field_map = _calibrate(method, model, cfg, dev_set, dev_, threshold_rule, n_boot, field_tile)
    artifact = Artifact(
        method=method,
        config=calibration.cfg,
        state_dict=_model_state(model),
        threshold=calibration.threshold,
        threshold_rule=calibration.threshold_rule,
        dev_f1=calibration.dev_f1,
        combiner=calibration.combiner.to_dict() if calibration.combiner else None,
        config_hash=json_digest(cfg),
        weights_init=weights_init,
        seed=int(seed),
        epochs_run=int(epoch),
        best_epoch=int(extra.get("best_epoch", -1)),
        stopped_early=bool(extra.get("stopped_early", False)),
        device=str(dev_),
        train_time_s=float(extra["train_time_s"]),
        n_train=int(len(fit_set.labels)),
        n_dev=int(len(dev_set.labels)),
        dev_scores=[float(s) for s in calibration.dev_scores],
        dev_labels=[int(v) for v in dev_set.labels],
        trained_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        data_digest=data_digest,
        code_digest=code_digest,
        package_version=__version__,
        extra={
            "calibration": {"threshold_rule": threshold_rule, "n_boot": int(n_boot)},
            **({"field_map": field_map} if field_map else {}),
        },
    )
    artifact.save(out / "model.pt")
    resume.remove()
    return artifact


def _calibrate(method: str, model, cfg: dict, dev_set: LabeledImages, device, rule: str, n_boot: int, tile: int):
    """Score the dev split with the scoring code and let the method fit its score and threshold;
    ``(calibration, field map threshold or None)``."""
    scorer = Scorer(method, model, cfg, device, combiner=None, threshold=None)
    name = scorer.method.field_map
    feats, maps = [], []
    for images in batches(dev_set.images, cfg.get("eval_batch_size", 256)):
        raw = scorer.raw(images)
        feats.append(raw["features"])
        if name:
            maps.append(raw[name])
    feats = np.concatenate(feats) if feats else np.zeros((0, len(scorer.feature_names)), np.float32)
    calibration = scorer.method.calibrate(feats, dev_set, cfg, rule=rule, n_boot=n_boot)
    if not name or not maps:
        return calibration, None
    return calibration, {"map": name, **map_threshold(np.concatenate(maps), dev_set.labels, tile, rule, n_boot)}


def _early_stopping(extra: dict, row: dict, model, best_state, epoch: int, patience: int):
    """Track the best dev loss; stop after ``patience`` epochs without improvement (report: 5)."""
    loss = row["dev_loss"]
    if not math.isfinite(loss) or loss < extra["best_loss"]:
        extra["best_loss"] = loss if math.isfinite(loss) else extra["best_loss"]
        extra["best_epoch"] = epoch + 1
        extra["bad_epochs"] = 0
        return _model_state(model)
    extra["bad_epochs"] += 1
    if extra["bad_epochs"] >= patience:
        extra["stopped_early"] = True
        log.info(
            "early stopping after epoch %d (best dev loss %.5f at epoch %d)", epoch + 1, extra["best_loss"], extra["best_epoch"]
        )
    return best_state
