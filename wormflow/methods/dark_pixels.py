"""The floor: the share of dark brightfield pixels, a one-feature hand-made baseline.

The real data's README reports that this one feature, with a threshold tuned on dev, separates
the classes (test F1 ≈ 0.96–1.0); the report shows it as the floor a learned method should beat.
A pixel is *dark* when its brightfield value (the G channel; G = B = brightfield in BBBC010) is
below ``level`` × the image's median G — relative, so it does not depend on the per-well
intensity stretch.  Score = dark share (higher → wormed); threshold: chosen on dev by the configured
rule (:func:`wormflow.decision.choose_threshold`).

It is a method like the others — an artifact (no weights; ``level`` comes from its config), scored
with every shard, gathered, evaluated — so the same code computes the floor everywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..decision import DEFAULT_THRESHOLD_RULE, N_BOOT
from .base import Calibration, Method, direct_calibration


class DarkShare(nn.Module):
    """uint8 ``(B, 3, S, S)`` → ``(B,)`` share of pixels with G < level × median(G)."""

    def __init__(self, level: float = 0.6):
        super().__init__()
        self.level = float(level)  # a plain number, not a buffer: scorers cast buffers to bf16

    def forward(self, x_u8: torch.Tensor) -> torch.Tensor:
        g = x_u8[:, 1].reshape(x_u8.shape[0], -1).float()
        median = torch.quantile(g, 0.5, dim=1, keepdim=True)  # interpolated, as numpy's median
        return (g < self.level * median).float().mean(1)


def dark_share(images: np.ndarray, level: float = 0.6) -> np.ndarray:
    """``(N, S, S, 3)`` uint8 → ``(N,)`` dark shares (the floor's score), computed by :class:`DarkShare`."""
    if len(images) == 0:
        return np.zeros(0, np.float64)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return DarkShare(level)(x).double().numpy()


class DarkPixelsMethod(Method):
    name = "dark_pixels"
    label = "Dark-pixel share (floor)"
    short = "Dark pixels"
    colour = "#777777"
    baseline = True
    cpu_batch = 256
    feature_names = ("dark_share",)
    log_features = (False,)
    default_init = "no weights (hand-made feature)"

    def build(self, cfg: dict) -> nn.Module:
        return DarkShare(cfg["level"])

    def n_epochs(self, cfg: dict) -> int:
        return 0

    def optimizers(self, model, cfg: dict) -> dict:
        return {}

    def epoch_runner(self, model, opts, fit_set, dev_set, device, cfg, num_workers):
        raise RuntimeError("the dark-pixel floor has nothing to train")

    def outputs(self, model: DarkShare, x_u8: torch.Tensor, cfg: dict) -> dict:
        return {"features": model(x_u8)[:, None]}

    def scores(self, features: np.ndarray, combiner=None) -> np.ndarray:
        return np.asarray(features[:, 0], dtype=np.float64)

    def calibrate(
        self, features: np.ndarray, dev_set, cfg: dict, rule: str = DEFAULT_THRESHOLD_RULE, n_boot: int = N_BOOT
    ) -> Calibration:
        return direct_calibration(self.scores(features), dev_set, cfg, None, rule, n_boot)


METHOD = DarkPixelsMethod()
