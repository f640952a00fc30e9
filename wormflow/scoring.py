"""Scoring: a batch of ``uint8`` images → features, score, prediction, reconstructions and maps.

The same code computes the dev-split features during training (to fit the
combiner and the threshold) and scores batches afterwards, so what is tuned
is exactly what runs.  Everything runs under ``torch.inference_mode``, in
channels_last layout, with BatchNorm folded into the convolutions; in bf16
autocast on CUDA, with bf16 weights on CPUs with native bf16
(``runtime.inference_dtype``), else in float32.

Input batches are ``(B, S, S, 3)`` ``uint8`` arrays as stored in the image
stores; ``permute`` turns them into ``(B, 3, S, S)`` tensors that are already
channels_last in memory, so no copy is made before the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .colour import colour_ratio
from .decision import Combiner
from .models import fold_batchnorm
from .runtime import autocast, inference_dtype
from .transforms import normalize, to_uint8_image

# Per-method features (name, log-transformed before the combination).  ``recon_error`` is the
# report's mean squared reconstruction error; ``recon_error_q`` a high quantile (``error_quantile``,
# default 0.99) of the per-pixel error map: worms are small, local structures, so the image's worst
# reconstructed pixels say more than its average (the usual image score of anomaly maps).
# The colour ratio is always the last column.
FEATURES = {
    "vae": (["recon_error", "recon_error_q", "colour_ratio"], [True, True, False]),
    "gan": (
        ["recon_error", "recon_error_q", "feature_error", "disc_logit", "colour_ratio"],
        [True, True, True, False, False],
    ),
    "resnet50": (["logit"], [False]),
}
DEFAULT_ERROR_QUANTILE = 0.99


@dataclass
class Outputs:
    """Per-image results of one batch (numpy, on the CPU)."""

    features: np.ndarray
    score: np.ndarray | None = None
    pred: np.ndarray | None = None
    recon: np.ndarray | None = None
    error_map: np.ndarray | None = None
    colour_mask: np.ndarray | None = None


def to_device_batch(images, device: torch.device) -> torch.Tensor:
    """``(B, S, S, 3)`` uint8 (numpy or tensor) → ``(B, 3, S, S)`` uint8 channels_last tensor on ``device``."""
    t = torch.as_tensor(images)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t.permute(0, 3, 1, 2)


def _reconstruction(x: torch.Tensor, recon: torch.Tensor, quantile: float) -> dict:
    """Error features and maps of a reconstruction (both in [-1, 1])."""
    recon = recon.float()
    diff = recon - x
    err = diff.abs().mean(1)  # per-pixel error map, (B, H, W)
    flat = err.flatten(1)
    k = max(1, min(flat.shape[1], math.ceil(quantile * flat.shape[1])))
    return {
        "recon_error": diff.pow(2).mean((1, 2, 3)),
        "recon_error_q": flat.kthvalue(k, dim=1).values,
        "recon": to_uint8_image(recon).permute(0, 2, 3, 1),
        "error_map": (err * 127.5).clamp_(0, 255).round_().to(torch.uint8),
    }


def _model_input(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` in the dtype of ``model``'s weights (bf16 where the scorer cast them)."""
    return x.to(next(model.parameters()).dtype)


def vae_outputs(model, x_u8: torch.Tensor, cfg: dict) -> dict:
    x = normalize(x_u8, channels_last=True)
    with autocast(x.device):
        recon, _, _ = model(_model_input(model, x))
    rec = _reconstruction(x, recon, cfg.get("error_quantile", DEFAULT_ERROR_QUANTILE))
    ratio, mask = colour_ratio(x_u8, cfg["colour"]["alpha"], cfg["colour"]["beta"])
    feats = torch.stack([rec["recon_error"], rec["recon_error_q"], ratio], 1)
    return {"features": feats, "recon": rec["recon"], "error_map": rec["error_map"], "colour_mask": mask}


def gan_outputs(model, x_u8: torch.Tensor, cfg: dict) -> dict:
    x = normalize(x_u8, channels_last=True)
    xm = _model_input(model, x)
    with autocast(x.device):
        recon = model.generator(model.encoder(xm))
        d_logit, f_x = model.discriminator.forward_with_features(xm)
        _, f_r = model.discriminator.forward_with_features(recon)
    rec = _reconstruction(x, recon, cfg.get("error_quantile", DEFAULT_ERROR_QUANTILE))
    feat_err = (f_x.float() - f_r.float()).pow(2).mean((1, 2, 3))
    ratio, mask = colour_ratio(x_u8, cfg["colour"]["alpha"], cfg["colour"]["beta"])
    feats = torch.stack([rec["recon_error"], rec["recon_error_q"], feat_err, d_logit.float(), ratio], 1)
    return {"features": feats, "recon": rec["recon"], "error_map": rec["error_map"], "colour_mask": mask}


def resnet_outputs(model, x_u8: torch.Tensor) -> dict:
    x = normalize(x_u8, channels_last=True)
    with autocast(x.device):
        logit = model(_model_input(model, x)).flatten()
    return {"features": logit.float()[:, None]}


# On the CPU the models run fastest on small batches that stay in the caches (bf16, 2 cores,
# benchmarks/results/scoring-knobs-*.json: ResNet-50 at 224 px 14.1 ms/image at 16, 19.2 at 256;
# at 128 px the GAN 7.2 at 32, 7.4 at 16 and 64, the VAE 2.5 at 16 and 32, 2.9 at 64); the
# scoring batch (config scoring.batch_size) still sets how many images are read and written at
# a time.
CPU_MODEL_BATCH = {"vae": 32, "gan": 32, "resnet50": 16}


class Scorer:
    """A trained method ready to score batches."""

    def __init__(
        self,
        method: str,
        model: torch.nn.Module,
        cfg: dict,
        device: torch.device,
        combiner: Combiner | None,
        threshold: float | None,
        *,
        own_model: bool = False,
    ):
        """``own_model``: ``model`` was built for this scorer and may be changed in place (folded,
        cast); otherwise (a model still being trained) the scorer works on a copy."""
        self.method = method
        self.model = (
            fold_batchnorm(model, inplace=own_model)
            .to(device=device, dtype=inference_dtype(device), memory_format=torch.channels_last)
            .eval()
        )
        self.cfg = cfg
        self.device = device
        self.combiner = combiner
        self.threshold = threshold
        self.image_size = int(cfg["image_size"])
        self.feature_names, self.log_features = FEATURES[method]

    @torch.inference_mode()
    def raw(self, images) -> dict:
        """Features and maps of a batch; on the CPU in model batches of :data:`CPU_MODEL_BATCH`."""
        step = CPU_MODEL_BATCH[self.method]
        if self.device.type != "cpu" or len(images) <= step:
            return self._raw(images)
        parts = [self._raw(images[start : start + step]) for start in range(0, len(images), step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _raw(self, images) -> dict:
        x_u8 = to_device_batch(images, self.device)
        if self.method == "vae":
            out = vae_outputs(self.model, x_u8, self.cfg)
        elif self.method == "gan":
            out = gan_outputs(self.model, x_u8, self.cfg)
        else:
            out = resnet_outputs(self.model, x_u8)
        return {k: v.cpu().numpy() for k, v in out.items()}

    def scores_from_features(self, features: np.ndarray) -> np.ndarray:
        if self.method == "resnet50":
            return 1.0 / (1.0 + np.exp(-np.clip(features[:, 0].astype(np.float64), -60, 60)))
        if self.combiner is None:
            raise RuntimeError(f"{self.method}: no fitted combiner")
        return self.combiner(features)

    def __call__(self, images) -> Outputs:
        raw = self.raw(images)
        score = self.scores_from_features(raw["features"]).astype(np.float32)
        pred = (score >= self.threshold).astype(np.int8) if self.threshold is not None else None
        mask = raw.get("colour_mask")
        return Outputs(
            features=raw["features"].astype(np.float32),
            score=score,
            pred=pred,
            recon=raw.get("recon"),
            error_map=raw.get("error_map"),
            colour_mask=mask.astype(np.uint8) if mask is not None else None,
        )

    def features(self, images_iter) -> np.ndarray:
        """Features of many batches, concatenated."""
        feats = [self.raw(b)["features"] for b in images_iter]
        return np.concatenate(feats) if feats else np.zeros((0, len(self.feature_names)), np.float32)


def batches(images: np.ndarray, size: int):
    for start in range(0, len(images), size):
        yield images[start : start + size]
