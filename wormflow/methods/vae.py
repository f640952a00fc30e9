"""Method 1 of the report: a convolutional VAE with the colour heuristic.

**Network** (128² by default).  Encoder: four ``Conv2d(k=4, s=2, p=1)`` blocks 3→64→128→256→512,
each with BatchNorm and LeakyReLU(0.2) (128² → 512×8×8); linear heads for μ and log σ².
Decoder: a linear layer back to 512×8×8 followed by ReLU, then the mirrored ``ConvTranspose2d``
blocks 512→256→128→64 with BatchNorm and ReLU and a final ``ConvTranspose2d`` 64→3 with Tanh.
Images are scaled to [-1, 1].

**Loss**: the report's BCE + KL, BCE computed on ``(x + 1) / 2`` and ``(x̂ + 1) / 2`` (BCE needs
[0, 1]), summed over pixels and latents and averaged over the batch; Adam 2e-4, 100 epochs, batch
64, trained on ``wormed`` images only.

**Score**: reconstruction errors and colour ratio combined on dev (:mod:`.anomaly`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import autocast, device_images
from ..transforms import normalize
from .anomaly import ERROR_GALLERY, MASK_GALLERY, RECON_GALLERY, AnomalyMethod, anomaly_outputs, model_input
from .base import GalleryMap
from .blocks import conv_block, deconv_block


class VAE(nn.Module):
    """Convolutional VAE of the report (see module docstring)."""

    def __init__(self, latent_dim: int = 128, image_size: int = 128, channels: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"VAE image_size must be a multiple of 16, got {image_size}")
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.feat_side = image_size // 2 ** len(channels)
        widths = (3, *channels)
        enc: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            enc += conv_block(cin, cout)
        self.encoder = nn.Sequential(*enc)
        flat = channels[-1] * self.feat_side**2
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, flat)
        dec: list[nn.Module] = []
        rev = widths[::-1]
        for cin, cout in zip(rev[:-2], rev[1:-1]):
            dec += deconv_block(cin, cout)
        dec += [nn.ConvTranspose2d(rev[-2], 3, 4, 2, 1), nn.Tanh()]
        self.decoder = nn.Sequential(*dec)
        self._top = channels[-1]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.flatten(self.encoder(x), 1)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc_dec(z)).view(-1, self._top, self.feat_side, self.feat_side)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kl_weight: float = 1.0):
    """The report's VAE loss, BCE + KL (see module docstring); returns ``(total, bce, kl)`` in float32."""
    with torch.autocast(device_type=recon.device.type, enabled=False):
        p = ((recon.float() + 1) / 2).clamp(1e-6, 1 - 1e-6)
        t = (x.float() + 1) / 2
        n = x.shape[0]
        bce = F.binary_cross_entropy(p, t, reduction="sum") / n
        mu, logvar = mu.float(), logvar.float()
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
    return bce + kl_weight * kl, bce, kl


def vae_epoch(model: VAE, opt, data: torch.Tensor, cfg: dict) -> dict:
    model.train()
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


class VaeMethod(AnomalyMethod):
    name = "vae"
    label = "VAE + colour heuristic"
    short = "VAE"
    colour = "#1b9e77"
    cpu_batch = 32  # benchmarks/results/scoring-knobs-*.json: 2.5 ms/image at 16 and 32, 2.9 at 64
    feature_names = ("recon_error", "recon_error_q", "colour_ratio")
    log_features = (True, True, False)
    gallery: tuple[GalleryMap, ...] = (RECON_GALLERY, ERROR_GALLERY, MASK_GALLERY)
    default_init = "random initialisation (PyTorch default init)"

    def build(self, cfg: dict) -> VAE:
        return VAE(latent_dim=cfg["latent_dim"], image_size=cfg["image_size"])

    def epoch_runner(self, model, opts, fit_set, dev_set, device, cfg, num_workers):
        data = device_images(fit_set.images, device)
        return lambda epoch: vae_epoch(model, opts["model"], data, cfg)

    def outputs(self, model: VAE, x_u8: torch.Tensor, cfg: dict) -> dict:
        x = normalize(x_u8, channels_last=True)
        with autocast(x.device):
            recon, _, _ = model(model_input(model, x))
        return anomaly_outputs(x, x_u8, recon, [], cfg)


METHOD = VaeMethod()
