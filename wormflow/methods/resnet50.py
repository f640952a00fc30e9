"""Method 3 of the report: a torchvision ResNet-50 classifier trained with focal loss.

**Network**: torchvision's ResNet-50 with ``fc = Sequential(Linear(2048, 1))``; initial weights
``auto | imagenet | none | <path>`` (:mod:`.resnet_weights`).

**Training** (the report): focal loss α 0.25, γ 2 (or weighted BCE with pos_weight = negatives /
positives), Adam 3e-6, 15 epochs, batch 8, early stopping with patience 5 on the dev loss (the
best epoch's weights are kept); per-sample augmentations RandomRotation(30), horizontal and
vertical flips and RandomResizedCrop(S, scale 0.8–1), then Normalize(0.5, 0.5), on both classes.

**Score**: ``sigmoid(logit)``; the threshold is a point of the report's grid 0.1–0.9, chosen on dev
by the configured rule (the report's: the best dev F1, ``f1max``; the robust rule: the grid point
nearest the middle of the dev gap).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from ..decision import DEFAULT_THRESHOLD_RULE, N_BOOT, RESNET_GRID
from ..runtime import autocast, device_images
from ..transforms import normalize, train_augment
from .anomaly import model_input
from .base import Calibration, Method, direct_calibration, sigmoid
from .resnet_weights import build_resnet50, resolve_weights


def resnet50_binary() -> nn.Module:
    """torchvision ResNet-50 (random init) with the report's head ``fc = Sequential(Linear(2048, 1))``."""
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Sequential(nn.Linear(2048, 1))
    return model


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Mean binary focal loss (Lin et al. 2017), the report's equations (1)–(3).

    ``p_t = p`` for positives and ``1 - p`` for negatives, ``α_t = α`` for positives and
    ``1 - α`` for negatives, ``FL = -α_t (1 - p_t)^γ log p_t``, with ``p = sigmoid(logit)``.
    Computed by ``torchvision.ops.sigmoid_focal_loss`` (stable for extreme logits) in float32.
    """
    return sigmoid_focal_loss(logits.float(), targets.float(), alpha=alpha, gamma=gamma, reduction="mean")


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Mean BCE with logits, positives weighted by ``pos_weight`` (negatives / positives)."""
    weight = torch.as_tensor(pos_weight, dtype=torch.float32, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), pos_weight=weight)


def loss_function(cfg: dict, labels: np.ndarray):
    if cfg["loss"] == "focal":
        return lambda logits, y: focal_loss(logits, y, cfg["focal_alpha"], cfg["focal_gamma"])
    n_pos = int((labels == 1).sum())
    pos_weight = (len(labels) - n_pos) / max(n_pos, 1)
    return lambda logits, y: weighted_bce(logits, y, pos_weight)


class AugmentedImages(torch.utils.data.Dataset):
    """uint8 ``(3, S, S)`` images with the report's per-sample augmentations (run in DataLoader workers)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def train_epoch(model, opt, loader, loss_fn, device) -> dict:
    model.train()
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
def dev_loss(model, dev, loss_fn, device, batch: int) -> float:
    model.eval()
    if len(dev.labels) == 0:
        return float("nan")
    tot = 0.0
    for start in range(0, len(dev.labels), batch):
        x = normalize(device_images(dev.images[start : start + batch], device), channels_last=True)
        y = torch.as_tensor(dev.labels[start : start + batch], device=device).float()
        with autocast(device):
            logits = model(x).flatten()
        tot += loss_fn(logits, y).item() * x.shape[0]
    return tot / len(dev.labels)


class ResNet50Method(Method):
    name = "resnet50"
    label = "ResNet-50 + focal loss"
    short = "ResNet-50"
    colour = "#7570b3"
    # benchmarks/results/scoring-knobs-*.json, 224 px, bf16, 2 cores: 14.1 ms/image at 16, 19.2 at 256
    cpu_batch = 16
    feature_names = ("logit",)
    log_features = (False,)

    def build(self, cfg: dict) -> nn.Module:
        return resnet50_binary()

    def check_ready(self, cfg: dict) -> None:
        resolve_weights(cfg["weights"])  # fail before any data is touched if the weights cannot be had

    def initial_model(self, cfg: dict) -> tuple[nn.Module, str]:
        return build_resnet50(cfg["weights"])

    def patience(self, cfg: dict) -> int:
        return int(cfg["patience"])

    def epoch_runner(self, model, opts, fit_set, dev_set, device, cfg, num_workers):
        loss_fn = loss_function(cfg, fit_set.labels)
        images = torch.from_numpy(np.ascontiguousarray(fit_set.images)).permute(0, 3, 1, 2).contiguous()
        aug = cfg["augment"]
        transform = train_augment(cfg["image_size"], aug["rotation"], aug["hflip"], aug["vflip"], aug["crop_scale"])
        dataset = AugmentedImages(images, torch.from_numpy(fit_set.labels), transform)

        def run(epoch: int) -> dict:
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=cfg["batch_size"],
                shuffle=True,
                num_workers=num_workers,
                pin_memory=device.type == "cuda",
                persistent_workers=False,  # a fresh worker seed per epoch from the (checkpointed) global RNG
            )
            row = train_epoch(model, opts["model"], loader, loss_fn, device)
            row["dev_loss"] = dev_loss(model, dev_set, loss_fn, device, cfg["eval_batch_size"])
            return row

        return run

    def outputs(self, model, x_u8: torch.Tensor, cfg: dict) -> dict:
        x = normalize(x_u8, channels_last=True)
        with autocast(x.device):
            logit = model(model_input(model, x)).flatten()
        return {"features": logit.float()[:, None]}

    def scores(self, features: np.ndarray, combiner=None) -> np.ndarray:
        return sigmoid(features[:, 0])

    def calibrate(
        self, features: np.ndarray, dev_set, cfg: dict, rule: str = DEFAULT_THRESHOLD_RULE, n_boot: int = N_BOOT
    ) -> Calibration:
        return direct_calibration(self.scores(features), dev_set, cfg, RESNET_GRID, rule, n_boot)


METHOD = ResNet50Method()
