"""The hand-made baseline: the share of dark brightfield pixels.

The real data's README reports that this one feature, with a threshold tuned
on dev, separates the classes (test F1 ≈ 0.96–1.0); the report shows it as
the floor a learned method should beat.  A pixel is *dark* when its
brightfield value (the G channel; G = B = brightfield in BBBC010) is below
``level`` × the image's median G — relative, so it does not depend on the
per-well intensity stretch.  Score = dark share (higher → wormed).
"""

from __future__ import annotations

import numpy as np

NAME = "dark_pixels"
LABEL = "Dark-pixel share (hand feature baseline)"


def dark_share(images: np.ndarray, level: float = 0.6) -> np.ndarray:
    """``(N, S, S, 3)`` uint8 → ``(N,)`` share of pixels with G < level × median(G)."""
    if len(images) == 0:
        return np.zeros(0, np.float64)
    g = images[..., 1].astype(np.float32).reshape(len(images), -1)
    median = np.median(g, axis=1, keepdims=True)
    return (g < level * median).mean(axis=1).astype(np.float64)
