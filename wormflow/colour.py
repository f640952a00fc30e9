"""The report's colour heuristic, vectorised over a batch.

For each image: the per-channel mean ``μ_c``; the distance of every pixel
from it, ``D(x, y) = Σ_c |I_c(x, y) − μ_c|``; ``U`` = the pixel with the
largest ``D`` (the most distinctive colour; the first in raster order on
ties); per-channel bounds ``[U_c − α_c·U_c, U_c + β_c·U_c]``.  The *colour
ratio* is the fraction of pixels whose three channels all lie within the
bounds, and the *colour mask* marks those pixels.  On worm images ``U`` is a
worm pixel and the ratio is roughly the worm's share of the image; on empty
background it is a background pixel and the ratio is large.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def colour_ratio(images: torch.Tensor, alpha: Sequence[float], beta: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(ratio (B,), mask (B, H, W) bool)`` for images ``(B, 3, H, W)`` with values 0..255."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
    # NCHW-contiguous channel planes: the per-pixel sums and tests below are then plain elementwise
    # passes (reducing over the channel dim of a channels_last batch instead is 2.5-3x as slow;
    # benchmarks/results/scoring-knobs-*.json)
    x = images.contiguous().float()
    b = x.shape[0]
    mu = x.mean(dim=(2, 3), keepdim=True)
    dev = (x - mu).abs_()
    dist = (dev[:, 0] + dev[:, 1] + dev[:, 2]).flatten(1)  # (B, H*W)
    idx = dist.argmax(dim=1)
    u = x.flatten(2).gather(2, idx.view(b, 1, 1).expand(b, 3, 1)).view(b, 3, 1, 1)
    a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    be = torch.as_tensor(beta, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    lo, hi = u - a * u, u + be * u
    inside = (x >= lo) & (x <= hi)
    mask = inside[:, 0] & inside[:, 1] & inside[:, 2]
    return mask.float().mean(dim=(1, 2)), mask
