"""Method 2 of the report: a DCGAN with an f-AnoGAN encoder, plus the colour heuristic.

**Networks** (128² by default).  The 64² DCGAN of Radford et al. with one more stride-2 block on
each side: the generator maps ``nz×1×1`` through ``ConvTranspose2d`` blocks (16·ngf at 4² … ngf
at 64²) with BatchNorm and ReLU to 3×128² with Tanh; the discriminator mirrors it with
``Conv2d``, LeakyReLU(0.2) and BatchNorm (none on the first block) down to a 4×4 feature map and
a final 4×4 convolution to one value.  The discriminator returns a *logit*: the report's sigmoid
+ BCE is computed as ``BCEWithLogitsLoss`` (identical in value, numerically stable and safe under
bf16 autocast).  Weights are initialised N(0, 0.02) as in DCGAN.  Adam 2e-4 (β₁ 0.5), 150
epochs, batch 64, ``wormed`` images only.

**Encoder (f-AnoGAN).**  Reconstruction must not need a slow per-image latent search: an encoder
with the discriminator's architecture, ending in a 4×4 convolution to ``nz`` values, is trained
for ``encoder_epochs`` against the frozen GAN so that ``G(E(x))`` reconstructs ``x`` in one
forward pass (Schlegl et al. 2019, the ``izi_f`` variant: ‖x − G(E(x))‖² + κ‖f_D(x) − f_D(G(E(x)))‖²).

**Score**: reconstruction errors, the discriminator-feature residual, the discriminator's logit
(realism) and the colour ratio, combined on dev (:mod:`.anomaly`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import autocast, device_images
from ..transforms import normalize
from .anomaly import MASK_GALLERY, RECON_GALLERY, AnomalyMethod, anomaly_outputs, model_input
from .base import GalleryMap, adam
from .blocks import conv_block, dcgan_init, deconv_block


def _n_stride2(image_size: int) -> int:
    n, side = 0, image_size
    while side > 4:
        if side % 2:
            raise ValueError(f"DCGAN image_size must be 4·2^k, got {image_size}")
        side //= 2
        n += 1
    if side != 4:
        raise ValueError(f"DCGAN image_size must be 4·2^k, got {image_size}")
    return n


class Generator(nn.Module):
    """DCGAN generator: ``nz×1×1`` → ``3×S×S`` (S = 128 by default)."""

    def __init__(self, nz: int = 100, ngf: int = 64, image_size: int = 128):
        super().__init__()
        self.nz = nz
        n = _n_stride2(image_size)
        widths = [ngf * 2 ** (n - 1 - i) for i in range(n)]  # 4² … S/2²
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += deconv_block(cin, cout)
        layers += [nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.nz, 1, 1))


class _DownNet(nn.Module):
    """Shared trunk of the discriminator and the encoder: ``3×S×S`` → ``C×4×4``."""

    def __init__(self, ndf: int, image_size: int):
        super().__init__()
        n = _n_stride2(image_size)
        widths = [ndf * 2**i for i in range(n)]
        layers = conv_block(3, widths[0], bn=False)
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += conv_block(cin, cout)
        self.features = nn.Sequential(*layers)
        self.out_channels = widths[-1]


class Discriminator(_DownNet):
    """DCGAN discriminator; ``forward`` returns one logit per image, ``features`` the last 4×4 map."""

    def __init__(self, ndf: int = 64, image_size: int = 128):
        super().__init__(ndf, image_size)
        self.head = nn.Conv2d(self.out_channels, 1, 4, 1, 0, bias=False)
        self.apply(dcgan_init)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.head(f).flatten(), f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


class Encoder(_DownNet):
    """f-AnoGAN encoder: image → latent ``z`` (``nz`` values) for the frozen generator."""

    def __init__(self, nz: int = 100, ndf: int = 64, image_size: int = 128):
        super().__init__(ndf, image_size)
        self.head = nn.Conv2d(self.out_channels, nz, 4, 1, 0)
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten(1)


class GAN(nn.Module):
    """Generator, discriminator and encoder held together (one state dict, one checkpoint)."""

    def __init__(self, nz: int = 100, ngf: int = 64, ndf: int = 64, image_size: int = 128):
        super().__init__()
        self.generator = Generator(nz, ngf, image_size)
        self.discriminator = Discriminator(ndf, image_size)
        self.encoder = Encoder(nz, ndf, image_size)


def _bce_logits(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


def gan_epoch(model: GAN, opts: dict, data: torch.Tensor, cfg: dict) -> dict:
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


def encoder_epoch(model: GAN, opt, data: torch.Tensor, cfg: dict) -> dict:
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
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            b = x.shape[0]
            tot += loss.item() * b
            rec_s += rec.item() * b
            feat_s += feat.item() * b
    finally:
        for p in (*g.parameters(), *d.parameters()):
            p.requires_grad_(True)
    return {"loss_e": tot / n, "loss_e_recon": rec_s / n, "loss_e_feature": feat_s / n}


class GanMethod(AnomalyMethod):
    name = "gan"
    label = "DCGAN + f-AnoGAN encoder"
    short = "GAN"
    colour = "#d95f02"
    cpu_batch = 32  # benchmarks/results/scoring-knobs-*.json: 7.2 ms/image at 32, 7.4 at 16 and 64
    feature_names = ("recon_error", "recon_error_q", "feature_error", "disc_logit", "colour_ratio")
    log_features = (True, True, True, False, False)
    gallery: tuple[GalleryMap, ...] = (RECON_GALLERY, MASK_GALLERY)
    default_init = "random initialisation (DCGAN init)"

    def build(self, cfg: dict) -> GAN:
        return GAN(nz=cfg["nz"], ngf=cfg["ngf"], ndf=cfg["ndf"], image_size=cfg["image_size"])

    def n_epochs(self, cfg: dict) -> int:
        return int(cfg["epochs"]) + int(cfg["encoder_epochs"])

    def optimizers(self, model: GAN, cfg: dict) -> dict:
        return {
            "generator": adam(model.generator.parameters(), cfg),
            "discriminator": adam(model.discriminator.parameters(), cfg),
            "encoder": adam(model.encoder.parameters(), {**cfg, "lr": cfg.get("encoder_lr", cfg["lr"])}),
        }

    def epoch_runner(self, model, opts, fit_set, dev_set, device, cfg, num_workers):
        data = device_images(fit_set.images, device)

        def run(epoch: int) -> dict:
            if epoch < cfg["epochs"]:
                return {"phase": "gan", **gan_epoch(model, opts, data, cfg)}
            return {"phase": "encoder", **encoder_epoch(model, opts["encoder"], data, cfg)}

        return run

    def outputs(self, model: GAN, x_u8: torch.Tensor, cfg: dict) -> dict:
        x = normalize(x_u8, channels_last=True)
        xm = model_input(model, x)
        with autocast(x.device):
            recon = model.generator(model.encoder(xm))
            d_logit, f_x = model.discriminator.forward_with_features(xm)
            _, f_r = model.discriminator.forward_with_features(recon)
        feat_err = (f_x.float() - f_r.float()).pow(2).mean((1, 2, 3))
        return anomaly_outputs(x, x_u8, recon, [feat_err, d_logit.float()], cfg)


METHOD = GanMethod()
