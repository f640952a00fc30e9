"""Hand-made per-pixel worm maps: the floors a learned method must beat.

Both work on the composite's G channel (the stretched brightfield, uint8;
worms are dark), optionally smoothed first by a Gaussian of σ = ``sigma`` px
(``scipy.ndimage.gaussian_filter``, reflect borders, truncated at 4σ):
``Gs``.  Defaults: no smoothing for dark pixels, σ = 2 for local contrast
(the settings behind the team's measured floors; smoothing the dark-pixel map
by σ = 2 lowers its test pixel AP from 0.48 to 0.41 in benchmarks/fields.py's team setting).

* :func:`dark_pixels`: ``1 − Gs / median(Gs over the well region)``, the
  median over derive.py's (eroded) well region; 0 at the typical well
  brightness, 1 for black pixels, negative for bright ones.
* :func:`local_contrast`: ``(mean₃₁(Gs) − Gs) / (std₃₁(Gs) + eps)`` where
  ``mean₃₁`` and ``std₃₁`` are the mean and the (population) standard deviation
  of ``Gs`` over the ``size``×``size`` window around each pixel
  (``uniform_filter``, reflect borders); how many local standard deviations a
  pixel is darker than its surroundings.

Higher means more worm-like; neither is bounded to [0, 1], and none needs to
be: every metric downstream is rank-based or uses a threshold chosen on dev.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

SIGMA = 2.0
CONTRAST_WINDOW = 31
CONTRAST_EPS = 1.0


def _smooth(g: np.ndarray, sigma: float) -> np.ndarray:
    g = np.asarray(g, dtype=np.float64)
    return ndi.gaussian_filter(g, sigma) if sigma > 0 else g


def dark_pixels(g: np.ndarray, well: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """``1 − Gs / median(Gs[well])`` (float64 H×W), ``Gs`` the G channel smoothed by σ."""
    gs = _smooth(g, sigma)
    if not np.any(well):
        raise ValueError("dark_pixels needs a non-empty well region")
    return 1.0 - gs / max(float(np.median(gs[well])), 1e-6)


def local_contrast(g: np.ndarray, size: int = CONTRAST_WINDOW, sigma: float = SIGMA, eps: float = CONTRAST_EPS) -> np.ndarray:
    """``(mean_size(Gs) − Gs) / (std_size(Gs) + eps)`` (float64 H×W), in grey levels of the uint8 G channel."""
    gs = _smooth(g, sigma)
    mean = ndi.uniform_filter(gs, size)
    var = np.maximum(ndi.uniform_filter(gs * gs, size) - mean * mean, 0.0)
    return (mean - gs) / (np.sqrt(var) + eps)


def dark_share_tiles(g: np.ndarray, ys, xs, tile: int, level: float = 0.6) -> np.ndarray:
    """Per tile, the share of pixels with ``G < level × median(G over the tile)``.

    The patch-level hand-feature floor (``wormflow.methods.dark_pixels.dark_share``) applied to each tile: relative
    to the tile's own median, so the well's uneven illumination cancels out.  Not a per-pixel map.
    """
    g = np.asarray(g, dtype=np.float32)
    if len(ys) == 0:
        return np.zeros(0, np.float64)
    crops = np.stack([g[y : y + tile, x : x + tile].ravel() for y, x in zip(ys, xs)])
    return (crops < level * np.median(crops, axis=1, keepdims=True)).mean(axis=1).astype(np.float64)
