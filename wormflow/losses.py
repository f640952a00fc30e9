"""Loss functions of the three methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Mean binary focal loss (Lin et al. 2017), the report's equations (1)–(3).

    ``p_t = p`` for positives and ``1 - p`` for negatives, ``α_t = α`` for
    positives and ``1 - α`` for negatives, ``FL = -α_t (1 - p_t)^γ log p_t``,
    with ``p = sigmoid(logit)``.  Computed by ``torchvision.ops.sigmoid_focal_loss``
    (stable for extreme logits) in float32.
    """
    return sigmoid_focal_loss(logits.float(), targets.float(), alpha=alpha, gamma=gamma, reduction="mean")


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Mean BCE with logits, positives weighted by ``pos_weight`` (negatives / positives)."""
    weight = torch.as_tensor(pos_weight, dtype=torch.float32, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), pos_weight=weight)


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kl_weight: float = 1.0):
    """The report's VAE loss, BCE + KL, summed over pixels and latents and averaged over the batch.

    ``recon`` (Tanh output) and ``x`` are in [-1, 1]; BCE is computed on both
    mapped to [0, 1].  Returns ``(total, bce, kl)``; always in float32 (BCE is
    not autocast-safe).
    """
    with torch.autocast(device_type=recon.device.type, enabled=False):
        p = ((recon.float() + 1) / 2).clamp(1e-6, 1 - 1e-6)
        t = (x.float() + 1) / 2
        n = x.shape[0]
        bce = F.binary_cross_entropy(p, t, reduction="sum") / n
        mu, logvar = mu.float(), logvar.float()
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
    return bce + kl_weight * kl, bce, kl
