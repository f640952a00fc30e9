"""Training the three methods, with resumable checkpoints.

One entry point, :func:`train`, for every method; the method-specific parts
are the per-epoch functions (``_vae_epoch``, ``_gan_epoch``,
``_encoder_epoch``, ``_resnet_epoch``) and :func:`build_model`.

* Seeded (``seed``); the device is chosen automatically (CUDA with bf16
  autocast and channels_last when present, CPU otherwise).
* After every epoch (or, with ``checkpoint_interval_s``, at most that often:
  for sub-second epochs on a GPU the write would dominate) a resume
  checkpoint (``resume.pt``: models, optimisers,
  epoch, RNG states, history, early-stopping state, config and package
  version) is written atomically.  A run that is killed resumes from it and
  produces the same weights as an uninterrupted run (same seed, CPU; the
  data order comes from the saved RNG state).  A checkpoint written for a
  different config, seed or code is ignored.
* ``history.csv`` (one row per epoch) and TensorBoard scalars are written as
  the run goes.
* At the end, the dev split is scored with the very code that scores batches
  (:mod:`wormflow.scoring`): the anomaly methods fit their feature combiner,
  every method chooses its F1-maximising threshold, and the final artifact
  ``model.pt`` (weights, threshold, combiner, config, provenance) is written;
  ``resume.pt`` is then removed.

Training data (the report): VAE and GAN train on the ``wormed`` images of
the train split only; ResNet-50 on both classes.  The dev split serves early
stopping (ResNet-50), the combiner and the threshold.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from .artifact import ARTIFACT_FORMAT, ARTIFACT_VERSION, load_artifact, save_artifact  # noqa: F401 - re-exported
from .atomic import atomic_path, atomic_write_text
from .colour import colour_ratio
from .decision import RESNET_GRID, Combiner, choose_threshold, cross_validated_scores, fit_combiner
from .losses import focal_loss, vae_loss, weighted_bce
from .models import GAN, VAE, resnet50_binary
from .runtime import autocast, config_hash, rng_state, seed_everything, select_device, set_rng_state
from .scoring import FEATURES, Scorer, batches
from .store import ImageStore
from .transforms import normalize, train_augment
from .weights import build_resnet50, resolve_weights

log = logging.getLogger(__name__)


@dataclass
class LabeledImages:
    """Decoded images of a labeled split at one resolution."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64
    ids: list[str]

    def select(self, mask: np.ndarray) -> LabeledImages:
        return LabeledImages(self.images[mask], self.labels[mask], [i for i, m in zip(self.ids, mask) if m])


def load_split(store_paths, size: int) -> LabeledImages:
    """Concatenate the image stores of one labeled split at resolution ``size``."""
    imgs, labels, ids = [], [], []
    for p in store_paths:
        store = ImageStore.open(p)
        if len(store):
            imgs.append(store.images(size))
            labels.append(store.labels.astype(np.int64))
            ids += store.ids
    if not imgs:
        return LabeledImages(np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64), [])
    return LabeledImages(np.concatenate(imgs), np.concatenate(labels), ids)


# --------------------------------------------------------------------------- models


def build_model(method: str, cfg: dict) -> tuple[torch.nn.Module, dict]:
    """A fresh model and the architecture arguments stored with it."""
    if method == "vae":
        arch = {"latent_dim": cfg["latent_dim"], "image_size": cfg["image_size"]}
        return VAE(**arch), arch
    if method == "gan":
        arch = {"nz": cfg["nz"], "ngf": cfg["ngf"], "ndf": cfg["ndf"], "image_size": cfg["image_size"]}
        return GAN(**arch), arch
    if method == "resnet50":
        return resnet50_binary(), {}
    raise ValueError(f"unknown method {method!r}")


def _adam(params, cfg: dict) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg.get("weight_decay", 0.0))


def build_optimizers(method: str, model: torch.nn.Module, cfg: dict) -> dict:
    if method == "gan":
        enc_cfg = {**cfg, "lr": cfg.get("encoder_lr", cfg["lr"])}
        return {
            "generator": _adam(model.generator.parameters(), cfg),
            "discriminator": _adam(model.discriminator.parameters(), cfg),
            "encoder": _adam(model.encoder.parameters(), enc_cfg),
        }
    return {"model": _adam(model.parameters(), cfg)}


def total_epochs(method: str, cfg: dict) -> int:
    return cfg["epochs"] + (cfg["encoder_epochs"] if method == "gan" else 0)


# --------------------------------------------------------------------------- resume state


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


def _device_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(N, S, S, 3)`` uint8 → ``(N, 3, S, S)`` uint8 tensor on ``device`` (channels_last in memory)."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)


def _vae_epoch(model, opts, data: torch.Tensor, cfg: dict) -> dict:
    model.train()
    opt = opts["model"]
    tot = bce_s = kl_s = 0.0
    n = data.shape[0]
    for idx in torch.randperm(n).split(cfg["batch_size"]):
        x = normalize(data[idx.to(data.device)], channels_last=True)
        with autocast(x.device):
            recon, mu, logvar = model(x)
        loss, bce, kl = vae_loss(recon, x, mu, logvar, cfg["kl_weight"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        b = x.shape[0]
        tot += loss.item() * b
        bce_s += bce.item() * b
        kl_s += kl.item() * b
    return {"train_loss": tot / n, "train_bce": bce_s / n, "train_kl": kl_s / n}


def _bce_logits(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


def _gan_epoch(model, opts, data: torch.Tensor, cfg: dict) -> dict:
    g, d = model.generator.train(), model.discriminator.train()
    sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
    n = data.shape[0]
    for idx in torch.randperm(n).split(cfg["batch_size"]):
        real = normalize(data[idx.to(data.device)], channels_last=True)
        b = real.shape[0]
        z = torch.randn(b, cfg["nz"], device=real.device)
        with autocast(real.device):
            fake = g(z)
            d_real = d(real)
            d_fake = d(fake.detach())
        loss_d = _bce_logits(d_real, 1.0) + _bce_logits(d_fake, 0.0)
        opts["discriminator"].zero_grad(set_to_none=True)
        loss_d.backward()
        opts["discriminator"].step()
        with autocast(real.device):
            d_gen = d(fake)
        loss_g = _bce_logits(d_gen, 1.0)
        opts["generator"].zero_grad(set_to_none=True)
        loss_g.backward()
        opts["generator"].step()
        sums["loss_d"] += loss_d.item() * b
        sums["loss_g"] += loss_g.item() * b
        sums["d_real"] += torch.sigmoid(d_real.float()).sum().item()
        sums["d_fake"] += torch.sigmoid(d_fake.float()).sum().item()
    return {k: v / n for k, v in sums.items()}


def _encoder_epoch(model, opts, data: torch.Tensor, cfg: dict) -> dict:
    """f-AnoGAN ``izi_f``: ‖x − G(E(x))‖² + κ‖f_D(x) − f_D(G(E(x)))‖², G and D frozen."""
    g, d, e = model.generator.eval(), model.discriminator.eval(), model.encoder.train()
    for p in (*g.parameters(), *d.parameters()):
        p.requires_grad_(False)
    tot = rec_s = feat_s = 0.0
    n = data.shape[0]
    try:
        for idx in torch.randperm(n).split(cfg["batch_size"]):
            x = normalize(data[idx.to(data.device)], channels_last=True)
            with autocast(x.device):
                recon = g(e(x))
                _, f_x = d.forward_with_features(x)
                _, f_r = d.forward_with_features(recon)
            rec = F.mse_loss(recon.float(), x.float())
            feat = F.mse_loss(f_r.float(), f_x.float())
            loss = rec + cfg["kappa"] * feat
            opts["encoder"].zero_grad(set_to_none=True)
            loss.backward()
            opts["encoder"].step()
            b = x.shape[0]
            tot += loss.item() * b
            rec_s += rec.item() * b
            feat_s += feat.item() * b
    finally:
        for p in (*g.parameters(), *d.parameters()):
            p.requires_grad_(True)
    return {"loss_e": tot / n, "loss_e_recon": rec_s / n, "loss_e_feature": feat_s / n}


class _AugmentedImages(torch.utils.data.Dataset):
    """uint8 ``(3, S, S)`` images with the report's per-sample augmentations (run in DataLoader workers)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def _resnet_loss(cfg: dict, pos_weight: float):
    if cfg["loss"] == "focal":
        return lambda logits, y: focal_loss(logits, y, cfg["focal_alpha"], cfg["focal_gamma"])
    return lambda logits, y: weighted_bce(logits, y, pos_weight)


def _resnet_epoch(model, opts, loader, loss_fn, device) -> dict:
    model.train()
    opt = opts["model"]
    tot, n = 0.0, 0
    for x_u8, y in loader:
        x = normalize(x_u8.to(device, non_blocking=True), channels_last=True)
        y = y.to(device, non_blocking=True).float()
        with autocast(device):
            logits = model(x).flatten()
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += loss.item() * x.shape[0]
        n += x.shape[0]
    return {"train_loss": tot / max(n, 1)}


@torch.inference_mode()
def _resnet_dev_loss(model, dev: LabeledImages, loss_fn, device, batch: int) -> float:
    model.eval()
    if len(dev.labels) == 0:
        return float("nan")
    tot = 0.0
    for start in range(0, len(dev.labels), batch):
        x = normalize(_device_images(dev.images[start : start + batch], device), channels_last=True)
        y = torch.as_tensor(dev.labels[start : start + batch], device=device).float()
        with autocast(device):
            logits = model(x).flatten()
        tot += loss_fn(logits, y).item() * x.shape[0]
    return tot / len(dev.labels)


# --------------------------------------------------------------------------- the driver


def _fingerprint(method: str, cfg: dict, seed: int, data_digest: str, code_digest: str) -> str:
    return config_hash({"method": method, "cfg": cfg, "seed": seed, "data": data_digest, "code": code_digest})


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
) -> dict:
    """Train ``method`` (resuming if possible) and write ``model.pt``; return the artifact dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev_ = select_device(device)
    weights_init = ""
    if method == "resnet50":
        resolve_weights(cfg["weights"])  # fail before any data is touched if the weights cannot be had
    seed_everything(seed, deterministic)
    if method == "resnet50":
        model, weights_init = build_resnet50(cfg["weights"])
        arch = {}
    else:
        model, arch = build_model(method, cfg)
    model = model.to(dev_).to(memory_format=torch.channels_last)
    opts = build_optimizers(method, model, cfg)
    fit_set = train_set.select(train_set.labels == 1) if method in ("vae", "gan") else train_set
    if len(fit_set.labels) == 0:
        raise ValueError(f"{method}: no training images (VAE and GAN need wormed images in the train split)")

    resume = ResumeState(out / "resume.pt", _fingerprint(method, cfg, seed, data_digest, code_digest))
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

    n_epochs = total_epochs(method, cfg)
    runner = _epoch_runner(method, cfg, model, opts, fit_set, dev_set, dev_, num_workers)
    epoch = start_epoch
    last_save = time.monotonic()
    while epoch < n_epochs and not extra["stopped_early"]:
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, **runner(epoch)}
        dt = time.perf_counter() - t0
        extra["train_time_s"] += dt
        row["seconds"] = round(dt, 3)
        row["images_per_s"] = round(len(fit_set.labels) / dt, 1) if dt > 0 else float("nan")
        if method == "resnet50":
            best_state = _early_stopping(extra, row, model, best_state, epoch, cfg["patience"])
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

    artifact = _finalise(method, cfg, model, arch, dev_set, dev_, seed, weights_init, extra, len(fit_set.labels), epoch)
    save_artifact(out / "model.pt", artifact)
    resume.remove()
    return artifact


def _epoch_runner(method, cfg, model, opts, fit_set, dev_set, device, num_workers) -> Callable[[int], dict]:
    if method == "vae":
        data = _device_images(fit_set.images, device)
        return lambda epoch: _vae_epoch(model, opts, data, cfg)
    if method == "gan":
        data = _device_images(fit_set.images, device)

        def run(epoch: int) -> dict:
            if epoch < cfg["epochs"]:
                return {"phase": "gan", **_gan_epoch(model, opts, data, cfg)}
            return {"phase": "encoder", **_encoder_epoch(model, opts, data, cfg)}

        return run
    labels = fit_set.labels
    n_pos = int((labels == 1).sum())
    pos_weight = (len(labels) - n_pos) / max(n_pos, 1)
    loss_fn = _resnet_loss(cfg, pos_weight)
    images = torch.from_numpy(np.ascontiguousarray(fit_set.images)).permute(0, 3, 1, 2).contiguous()
    aug = cfg["augment"]
    transform = train_augment(cfg["image_size"], aug["rotation"], aug["hflip"], aug["vflip"], aug["crop_scale"])
    dataset = _AugmentedImages(images, torch.from_numpy(labels), transform)

    def run(epoch: int) -> dict:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=cfg["batch_size"],
            shuffle=True,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,  # a fresh worker seed per epoch from the (checkpointed) global RNG
        )
        row = _resnet_epoch(model, opts, loader, loss_fn, device)
        row["dev_loss"] = _resnet_dev_loss(model, dev_set, loss_fn, device, cfg["eval_batch_size"])
        return row

    return run


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


def fit_colour_bounds(method: str, feats: np.ndarray, dev_set: LabeledImages, cfg: dict) -> tuple[dict, np.ndarray]:
    """Choose the colour heuristic's α/β (shared by the three channels) on the dev split.

    For every (α, β) of ``colour.fit_grid`` the colour-ratio column (the last
    feature) is recomputed and the out-of-fold dev AUROC of the combiner
    measured; the best pair wins (ties: the larger dev F1, then the first pair).
    Needs both classes in dev; otherwise the configured bounds stay.
    """
    from sklearn.metrics import roc_auc_score

    colour = dict(cfg["colour"])
    labels = dev_set.labels
    if np.unique(labels).size < 2:
        log.warning("colour bounds not fitted: the dev split has one class only")
        return colour, feats
    names, logs = FEATURES[method]
    x = torch.from_numpy(np.ascontiguousarray(dev_set.images)).permute(0, 3, 1, 2)
    grid = colour.get("fit_grid", [0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0])
    best = None
    for a in grid:
        for b in grid:
            ratio, _ = colour_ratio(x, [a] * 3, [b] * 3)
            trial = feats.copy()
            trial[:, -1] = ratio.numpy()
            scores = cross_validated_scores(trial, labels, names, logs, c=cfg.get("combiner_c", 1.0))
            if scores is None:
                scores = fit_combiner(trial, labels, names, logs, c=cfg.get("combiner_c", 1.0))(trial)
            key = (round(roc_auc_score(labels, scores), 6), choose_threshold(scores, labels).dev_f1)
            if best is None or key > best[0]:
                best = (key, a, b, trial)
    (auroc, f1), a, b, trial = best
    log.info("colour bounds fitted on dev: alpha %g, beta %g (dev AUROC %.4f, F1 %.4f)", a, b, auroc, f1)
    colour.update(alpha=[a] * 3, beta=[b] * 3, fitted_dev_auroc=auroc)
    return colour, trial


def _finalise(method, cfg, model, arch, dev_set, device, seed, weights_init, extra, n_train, epochs_run) -> dict:
    """Score the dev split with the scoring code, fit combiner and threshold, and assemble the artifact."""
    section_hash = config_hash(cfg)
    cfg = copy.deepcopy(cfg)  # the colour bounds may be fitted below; the artifact stores what scoring uses
    scorer = Scorer(method, model, cfg, device, combiner=None, threshold=None)
    feats = scorer.features(batches(dev_set.images, cfg["eval_batch_size"]))
    names, logs = FEATURES[method]
    combiner = None
    if method != "resnet50":
        if cfg["colour"].get("fit_on_dev"):
            cfg["colour"], feats = fit_colour_bounds(method, feats, dev_set, cfg)
        combiner = fit_combiner(feats, dev_set.labels, names, logs, c=cfg.get("combiner_c", 1.0))
        scorer.combiner = combiner
    scores = scorer.scores_from_features(feats) if len(feats) else np.zeros(0)
    if len(scores) == 0:
        raise ValueError(f"{method}: the dev split is empty; a threshold cannot be chosen")
    grid = RESNET_GRID if method == "resnet50" else None
    tuning = scores
    if combiner is not None:  # the combiner was fitted on dev too: tune on out-of-fold scores
        oof = cross_validated_scores(feats, dev_set.labels, names, logs, c=cfg.get("combiner_c", 1.0))
        tuning = scores if oof is None else oof
    choice = choose_threshold(tuning, dev_set.labels, grid)
    if tuning is not scores:
        choice.rule += ", out-of-fold combined scores"
    return {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_VERSION,
        "method": method,
        "package_version": __version__,
        "arch": arch,
        "state_dict": _model_state(model),
        "threshold": float(choice.threshold),
        "threshold_rule": choice.rule,
        "dev_f1": float(choice.dev_f1),
        "combiner": combiner.to_dict() if combiner else None,
        "config": copy.deepcopy(cfg),
        "config_hash": section_hash,
        "weights_init": weights_init or "random initialisation (DCGAN/default init)",
        "seed": int(seed),
        "epochs_run": int(epochs_run),
        "best_epoch": int(extra.get("best_epoch", -1)),
        "stopped_early": bool(extra.get("stopped_early", False)),
        "device": str(device),
        "train_time_s": float(extra["train_time_s"]),
        "n_train": int(n_train),
        "n_dev": int(len(dev_set.labels)),
        "dev_scores": [float(s) for s in scores],
        "dev_labels": [int(v) for v in dev_set.labels],
        "trained_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --------------------------------------------------------------------------- artifacts


def model_from_artifact(artifact: dict) -> torch.nn.Module:
    """The artifact's model with its trained weights, built without a random initialisation
    (on the meta device, then the loaded tensors assigned: a GAN scorer is ready in 0.12 s instead
    of 0.37 s; benchmarks/results/scoring-knobs-*.json)."""
    with torch.device("meta"):
        model, _ = build_model(artifact["method"], artifact["config"])
    model.load_state_dict(artifact["state_dict"], assign=True)  # strict: every tensor is replaced
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"{artifact['method']} artifact lacks tensors: {', '.join(left[:5])}")
    return model


def scorer_from_artifact(artifact: dict, device: str = "auto") -> Scorer:
    method = artifact["method"]
    combiner = Combiner.from_dict(artifact["combiner"]) if artifact["combiner"] else None
    return Scorer(
        method,
        model_from_artifact(artifact),
        artifact["config"],
        select_device(device),
        combiner,
        artifact["threshold"],
        own_model=True,
    )
