"""The networks of the three methods.

Where the report elides details, the standard choice is made and noted here:

* **VAE.** Encoder: four ``Conv2d(k=4, s=2, p=1)`` blocks 3→64→128→256→512,
  each with BatchNorm and LeakyReLU(0.2) (128² → 512×8×8); linear heads for
  μ and log σ².  Decoder: a linear layer back to 512×8×8 followed by ReLU,
  then the mirrored ``ConvTranspose2d`` blocks 512→256→128→64 with BatchNorm
  and ReLU and a final ``ConvTranspose2d`` 64→3 with Tanh.  Images are scaled
  to [-1, 1].  The report's BCE reconstruction term is computed on
  ``(x + 1) / 2`` and ``(x̂ + 1) / 2`` (BCE needs [0, 1]).
* **DCGAN at 128².** The 64² DCGAN of Radford et al. with one more stride-2
  block on each side: the generator maps ``nz×1×1`` through
  ``ConvTranspose2d`` blocks (16·ngf at 4² … ngf at 64²) with BatchNorm and
  ReLU to 3×128² with Tanh; the discriminator mirrors it with ``Conv2d``,
  LeakyReLU(0.2) and BatchNorm (none on the first block) down to a 4×4
  feature map and a final 4×4 convolution to one value.  The discriminator
  returns a *logit*: the report's sigmoid + BCE is computed as
  ``BCEWithLogitsLoss`` (identical in value, numerically stable and safe
  under bf16 autocast); scoring applies the sigmoid.  Weights are
  initialised N(0, 0.02) as in DCGAN.
* **Encoder (f-AnoGAN).** The discriminator's architecture ending in a 4×4
  convolution to ``nz`` values, trained against the frozen GAN so that
  ``G(E(x))`` reconstructs ``x`` in one forward pass (Schlegl et al. 2019,
  the ``izi_f`` variant).
* **ResNet-50.** torchvision's ResNet-50 with ``fc = Sequential(Linear(2048, 1))``.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(cin: int, cout: int, *, bn: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


def _deconv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


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
            enc += _conv_block(cin, cout)
        self.encoder = nn.Sequential(*enc)
        flat = channels[-1] * self.feat_side**2
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, flat)
        dec: list[nn.Module] = []
        rev = widths[::-1]
        for cin, cout in zip(rev[:-2], rev[1:-1]):
            dec += _deconv_block(cin, cout)
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
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z), mu, logvar


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


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
            layers += _deconv_block(cin, cout)
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
        layers = _conv_block(3, widths[0], bn=False)
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += _conv_block(cin, cout)
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


def resnet50_binary() -> nn.Module:
    """torchvision ResNet-50 (random init) with the report's head ``fc = Sequential(Linear(2048, 1))``."""
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Sequential(nn.Linear(2048, 1))
    return model


# --------------------------------------------------------------------------- inference


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` (``model`` itself with ``inplace``) with every BatchNorm2d
    that directly follows a convolution folded into that convolution's weights (the BatchNorm
    becomes an Identity).

    Scoring only: the same function in fewer passes over memory (ResNet-50 has 53 BatchNorms),
    equal to the original up to float rounding.  Pairs found: neighbours in an ``nn.Sequential``
    (the VAE, DCGAN and encoder blocks, torchvision's ``downsample``) and torchvision's
    ``conv<k>``/``bn<k>`` attributes (ResNet stem and bottlenecks, whose ``forward`` applies
    ``bn<k>`` right after ``conv<k>``).  Without ``inplace``, ``model`` itself is left untouched
    (a model still being trained); a model loaded only to score is folded in place (no copy).
    """
    import copy

    folded = (model if inplace else copy.deepcopy(model)).eval()
    _fold_in_place(folded)
    return folded


def _fold_pair(conv: nn.Module, bn: nn.Module) -> nn.Module | None:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats or bn.running_mean is None:
        return None
    if type(conv) is nn.Conv2d:
        return fuse_conv_bn_eval(conv, bn)
    if type(conv) is nn.ConvTranspose2d:
        return fuse_conv_bn_eval(conv, bn, transpose=True)
    return None


def _fold_in_place(module: nn.Module) -> None:
    for child in module.children():
        _fold_in_place(child)
    names = list(module._modules)
    if isinstance(module, nn.Sequential):
        pairs = list(zip(names, names[1:]))
    else:
        pairs = [(f"conv{n[2:]}", n) for n in names if n.startswith("bn") and f"conv{n[2:]}" in module._modules]
    for conv_name, bn_name in pairs:
        fused = _fold_pair(module._modules[conv_name], module._modules[bn_name])
        if fused is not None:
            module._modules[conv_name] = fused
            module._modules[bn_name] = nn.Identity()
