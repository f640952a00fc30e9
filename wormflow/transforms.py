"""Image transforms (torchvision transforms v2).

The workflow decodes each image once and stores it as ``uint8`` at each
method's resolution (``Resize`` happens at decode time, see
:func:`wormflow.imageio.resize_rgb`).  What remains:

* :func:`train_augment` — the report's training augmentations for ResNet-50,
  applied per sample to ``uint8`` ``(3, S, S)`` tensors: RandomRotation(30),
  horizontal and vertical flips, RandomResizedCrop(S, scale 0.8–1).
* :func:`normalize` — ``ToDtype(float32, scale=True)`` then
  ``Normalize(0.5, 0.5)`` on the device, for whole batches (this is also the
  validation transform once the image has its method's size).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def train_augment(size: int, rotation: float = 30.0, hflip: bool = True, vflip: bool = True, crop_scale=(0.8, 1.0)):
    """Per-sample geometric augmentation on ``uint8`` tensors (the report's training transforms minus Normalize)."""
    steps = []
    if rotation:
        steps.append(v2.RandomRotation(rotation))
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if vflip:
        steps.append(v2.RandomVerticalFlip())
    steps.append(v2.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True))
    return v2.Compose(steps)


def normalize(x_uint8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """``(B, 3, S, S)`` uint8 → float32 in [-1, 1] (ToDtype + Normalize(0.5, 0.5)), on ``x``'s device."""
    x = x_uint8.float().div_(127.5).sub_(1.0)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def to_uint8_image(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: [-1, 1] floats → ``uint8`` 0..255."""
    return x.float().clamp(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8)
