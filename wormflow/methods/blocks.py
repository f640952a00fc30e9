"""Network building blocks shared by the VAE and the DCGAN (stride-2 4×4 convolutions, DCGAN init)."""

from __future__ import annotations

from torch import nn


def conv_block(cin: int, cout: int, *, bn: bool = True) -> list[nn.Module]:
    """``Conv2d(k=4, s=2, p=1)`` (+ BatchNorm) + LeakyReLU(0.2): halves the side."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


def deconv_block(cin: int, cout: int) -> list[nn.Module]:
    """``ConvTranspose2d(k=4, s=2, p=1)`` + BatchNorm + ReLU: doubles the side."""
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
