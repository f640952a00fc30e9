"""A small synthetic worm dataset, so that a fresh clone of the workflow runs without real data.

The real data (BBBC010 patches, see ``shared/data/bbbc010/README.md``) are RGB
patches of a microscope well: R is the fluorescence channel (dead worms glow
red, everything else is nearly black), G = B is brightfield (a bright, slightly
textured background with an uneven illumination; worms are dark).  This module
draws look-alikes with numpy and scipy only:

* **background** (both classes): a bright brightfield level with a linear
  illumination gradient, an off-centre vignetting, low-frequency mottle, fine
  grain and a few faint specks and smudges; a dim, slightly noisy red channel.
* **wormed**: 1–3 worms.  Each worm is a smooth curve (heading = integral of a
  sinusoidal curvature plus a smoothed random walk), 0.4–1.2 × ``size`` long,
  rasterised as a tube whose radius tapers at both ends (4–7 px thick at
  64 px, as in the real patches, scaled with ``size``), dark in G/B with a
  darker cuticle, a lighter core and a little internal texture.  About 35 % of
  the worms are dead (straighter, rod-like) and glow in R.  The first worm's
  midpoint lies in the central half of the patch (like the real labelling
  rule); the others may leave the frame.  In about 10 % of the wormed patches
  the worms are out of focus (paler and blurred).
* **no_wormed**: the same background; about 30 % carry distractors (debris
  blobs, faint scratches, strong illumination variations).  Wormed patches
  carry debris too, less often, so debris alone does not reveal the class.
* every patch gets a small random brightness/contrast change.

So the task is learnable (the fraction of dark brightfield pixels separates
the classes well, as on the real data) but not trivial.

Output layout (``out_dir`` is replaced as a whole, see :func:`generate_demo`)::

    <out_dir>/labeled/{train,dev,test}/{no_wormed,wormed}/demo_<split>_<cls>_<index:03d>.png
    <out_dir>/batches/<batch>/img_<index:04d>.png
    <out_dir>/batches/labels.csv          # batch,file,label,well,worm_frac (as the real labels.csv)

Every image is drawn from its own generator, seeded from
``(seed, collection, class or batch, index)``, and saved as a PNG with fixed
parameters and no metadata, so the same seed gives byte-identical files.

Usage: ``python -m wormflow.demo OUT_DIR [--seed N] [--size N] [--n-train N] ...``

(Longer than the package's ~400-line guideline on purpose: one self-contained generator made of
many small drawing functions that only this module uses; split, they would only be imported here.)
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import io
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from . import CLASSES

SPLITS = ("train", "dev", "test")
DEFAULT_BATCHES: tuple[tuple[str, int], ...] = (("demo-batch-1", 30), ("demo-batch-2", 30))
LABELS_CSV_FIELDS = ("batch", "file", "label", "well", "worm_frac")
DEMO_WELL = "demo"
MIN_SIZE = 16
MIN_WORM_FRAC = 0.03  # wormed patches hold at least this much worm (the real rule: 5 % at 64 px, with thicker worms)
DISTRACTOR_SHARE = 0.3  # share of no_wormed patches with debris / scratches / strong illumination
WORMED_DEBRIS_SHARE = 0.15
DEAD_WORM_SHARE = 0.35
FAINT_WORM_SHARE = 0.1  # wormed patches whose worms are out of focus (pale, blurred)
PNG_COMPRESS_LEVEL = 3  # noisy images: higher levels cost time and save ~2 %

Rng = np.random.Generator


# ----------------------------------------------------------------------------------------------------------------------
# seeding


def _key_int(key: int | str) -> int:
    """A stable non-negative integer for a seed key (Python's ``hash`` is salted per process)."""
    if isinstance(key, int):
        if key < 0:
            raise ValueError(f"seed keys must be non-negative, got {key}")
        return key
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")


def image_rng(seed: int, *keys: int | str) -> Rng:
    """The generator of one image (or one shuffle), independent of every other image's."""
    return np.random.default_rng(np.random.SeedSequence([_key_int(seed), *(_key_int(k) for k in keys)]))


# ----------------------------------------------------------------------------------------------------------------------
# small drawing helpers


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(y, x)``, each ``(size, size)`` float64 (cached, read-only)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def _smooth_noise(rng: Rng, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation."""
    n = ndi.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (n - n.mean()) / max(float(n.std()), 1e-9)


def _disc(size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """Anti-aliased filled disc: coverage in [0, 1] per pixel."""
    y, x = _grid(size)
    return np.clip(radius - np.hypot(y - cy, x - cx) + 0.5, 0.0, 1.0)


def _tube_depth(size: int, points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """How deep each pixel lies inside the union of discs ``(points[i], radii[i])``, in pixels (negative outside).

    ``points`` are sampled densely along a curve, so the union is a tube of varying radius; its anti-aliased
    coverage is ``clip(depth + 0.5, 0, 1)``.  Only the curve's bounding box is evaluated (one vectorised distance
    matrix); pixels outside it get ``-size``.
    """
    depth_map = np.full((size, size), -float(size))
    pad = float(radii.max()) + 2.0
    y0, x0 = np.floor(points.min(axis=0) - pad).astype(int)
    y1, x1 = np.ceil(points.max(axis=0) + pad).astype(int)
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, size), min(x1, size)
    if y0 >= y1 or x0 >= x1:
        return depth_map
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dy = yy.reshape(-1, 1) - points[None, :, 0]
    dx = xx.reshape(-1, 1) - points[None, :, 1]
    depth_map[y0:y1, x0:x1] = (radii[None, :] - np.sqrt(dy * dy + dx * dx)).max(axis=1).reshape(y1 - y0, x1 - x0)
    return depth_map


def _curve(rng: Rng, length: float, centre: np.ndarray, step: float = 1.0, wiggle: float = 1.0) -> np.ndarray:
    """A smooth random curve of arc length ``length`` whose midpoint is ``centre``: ``(n, 2)`` points ``(y, x)``.

    The heading is the integral of a curvature made of one sine along the arc (undulation) plus a constant
    (overall bend) plus a smoothed random walk; ``wiggle`` scales all three.
    """
    n = max(int(length / step) + 1, 3)
    s = np.linspace(-length / 2, length / 2, n)
    wavelength = length * rng.uniform(0.5, 1.3)
    bend_amplitude = rng.uniform(0.15, 1.0) * wiggle  # peak heading swing of the undulation, radians
    kappa = bend_amplitude * 2 * np.pi / wavelength * np.sin(2 * np.pi * s / wavelength + rng.uniform(0, 2 * np.pi))
    kappa += rng.normal(0.0, 1.0 * wiggle / length)
    kappa += ndi.gaussian_filter1d(rng.standard_normal(n), sigma=n / 6, mode="nearest") * wiggle * 3.0 / length
    heading = np.cumsum(kappa) * step
    heading += rng.uniform(0, 2 * np.pi) - heading[n // 2]
    path = np.cumsum(np.stack([np.sin(heading), np.cos(heading)], axis=1) * step, axis=0)
    return path - path[n // 2] + centre


def _taper(n: int, head: float = 0.12, tail: float = 0.25) -> np.ndarray:
    """Relative body radius along a worm (1 in the middle): a blunt head and a pointed tail."""
    t = np.linspace(0.0, 1.0, n)
    r = np.clip(t / head, 0, 1) ** 0.5 * np.clip((1 - t) / tail, 0, 1) ** 0.8
    return np.maximum(r, 0.15)


# ----------------------------------------------------------------------------------------------------------------------
# image parts


def brightfield_background(rng: Rng, size: int) -> np.ndarray:
    """Brightfield (G = B) background in 0..255 floats: level, gradient, vignetting, mottle, grain, specks, smudges."""
    y, x = _grid(size)
    level = rng.uniform(135.0, 235.0)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((y - size / 2) * np.sin(angle) + (x - size / 2) * np.cos(angle)) / size
    bg = level * (1.0 + rng.uniform(0.0, 0.18) * ramp)
    cy, cx = rng.uniform(-1.0, 2.0, size=2) * size  # vignetting centre, usually outside the patch
    bg *= 1.0 - rng.uniform(0.0, 0.08) * ((y - cy) ** 2 + (x - cx) ** 2) / (2 * size**2)
    bg += rng.uniform(1.5, 5.0) * _smooth_noise(rng, size, size / 8)
    bg += rng.uniform(1.5, 3.0) * _smooth_noise(rng, size, 0.7) + rng.normal(0.0, 1.2, (size, size))
    for _ in range(rng.poisson(5)):  # tiny dark specks, in both classes
        bg *= 1.0 - rng.uniform(0.08, 0.3) * _disc(size, *rng.uniform(0, size, 2), rng.uniform(0.4, 1.2))
    for _ in range(rng.poisson(1.2)):  # faint out-of-focus smudges
        blob = ndi.gaussian_filter(_disc(size, *rng.uniform(0, size, 2), rng.uniform(1.5, 4.0) * size / 64), 1.5)
        bg *= 1.0 - rng.uniform(0.04, 0.12) * blob / max(blob.max(), 1e-9)
    return bg


def red_background(rng: Rng, size: int) -> np.ndarray:
    """Fluorescence (R) background: nearly black, sometimes a little brighter, rarely one bright speck."""
    level = rng.uniform(8.0, 20.0) if rng.random() < 0.12 else rng.uniform(0.5, 5.0)
    red = level + level * 0.3 * _smooth_noise(rng, size, size / 6) + rng.normal(0.0, 0.8, (size, size))
    if rng.random() < 0.1:
        red += rng.uniform(80.0, 230.0) * _disc(size, *rng.uniform(0, size, 2), rng.uniform(0.4, 1.0))
    return red


def _worm_geometry(rng: Rng, size: int, *, centred: bool, dead: bool) -> tuple[np.ndarray, np.ndarray]:
    """Points and radii of one worm.

    A ``centred`` worm has its midpoint in the central half of the patch; a ``dead`` one is straighter (rod-like).
    """
    length = rng.uniform(0.4, 1.2) * size
    lo, hi = (0.25, 0.75) if centred else (0.0, 1.0)
    centre = rng.uniform(lo, hi, size=2) * size
    points = _curve(rng, length, centre, wiggle=rng.uniform(0.2, 0.5) if dead else 1.0)
    width = rng.uniform(4.0, 7.0) * size / 64
    return points, width / 2 * _taper(len(points)) + 0.3


def worm_density(depth: np.ndarray, core_lightening: float) -> np.ndarray:
    """Optical density profile (0..1) of a worm from its depth map: a dark cuticle and a somewhat lighter core."""
    cover = np.clip(depth + 0.5, 0.0, 1.0)
    return cover * (1.0 - core_lightening * np.clip((depth - 1.0) / 2.0, 0.0, 1.0))


def draw_worms(rng: Rng, size: int, n_worms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps of ``n_worms`` worms, each ``(size, size)`` in [0, 1]: ``(coverage, optical density, dead-worm glow)``."""
    cover = np.zeros((size, size))
    density = np.zeros((size, size))
    dead = np.zeros((size, size))
    for i in range(n_worms):
        is_dead = bool(rng.random() < DEAD_WORM_SHARE)
        points, radii = _worm_geometry(rng, size, centred=i == 0, dead=is_dead)
        depth = _tube_depth(size, points, radii)
        cover = np.maximum(cover, np.clip(depth + 0.5, 0.0, 1.0))
        density = np.maximum(density, worm_density(depth, rng.uniform(0.1, 0.35)))
        if is_dead:  # the fluorescence fills the body and fades towards the cuticle
            dead = np.maximum(dead, np.clip((depth + 0.5) / 2.0, 0.0, 1.0))
    return cover, density, dead


def _worm_count(rng: Rng) -> int:
    return int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))


def sample_worms(rng: Rng, size: int, tries: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`draw_worms` with 1–3 worms covering at least :data:`MIN_WORM_FRAC` of the patch (redrawn if too little)."""
    maps = draw_worms(rng, size, _worm_count(rng))
    for _ in range(tries):
        if maps[0].mean() >= MIN_WORM_FRAC:
            break
        maps = draw_worms(rng, size, _worm_count(rng))
    return maps


def debris(rng: Rng, size: int) -> np.ndarray:
    """Opacity map (0..1) of a small cluster of round / irregular debris particles."""
    y, x = _grid(size)
    out = np.zeros((size, size))
    cy, cx = rng.uniform(0.1, 0.9, 2) * size
    for _ in range(rng.integers(1, 4)):
        py, px = cy + rng.normal(0, 3) * size / 64, cx + rng.normal(0, 3) * size / 64
        radius = rng.uniform(1.5, 5.0) * size / 64
        theta = np.arctan2(y - py, x - px)
        k = rng.integers(2, 5)
        wobble = 1.0 + rng.uniform(0.0, 0.35) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
        part = np.clip(radius * wobble - np.hypot(y - py, x - px) + 0.5, 0, 1)
        out = np.maximum(out, part * rng.uniform(0.25, 0.6))
    return ndi.gaussian_filter(out, rng.uniform(0.7, 1.6))


def scratch(rng: Rng, size: int) -> np.ndarray:
    """Signed contrast map of a faint, long, slightly curved scratch (negative = darker)."""
    y, x = _grid(size)
    angle = rng.uniform(0, np.pi)
    offset = rng.uniform(-0.4, 0.4) * size
    u = (x - size / 2) * np.cos(angle) + (y - size / 2) * np.sin(angle)
    v = -(x - size / 2) * np.sin(angle) + (y - size / 2) * np.cos(angle)
    dist = np.abs(v - offset - rng.uniform(-1.5, 1.5) * u**2 / size)
    line = np.clip(rng.uniform(0.4, 0.8) - dist + 0.5, 0, 1)
    return line * rng.uniform(0.05, 0.15) * rng.choice([-1.0, 1.0])


def illumination_shift(rng: Rng, size: int) -> np.ndarray:
    """Multiplicative gain map of a strong illumination variation (a steep gradient or a broad shadow)."""
    y, x = _grid(size)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = ((y - size / 2) * np.sin(angle) + (x - size / 2) * np.cos(angle)) / size
        return 1.0 + rng.uniform(0.15, 0.3) * ramp
    shadow = ndi.gaussian_filter(_disc(size, *rng.uniform(0, size, 2), size * rng.uniform(0.15, 0.3)), size / 10)
    return 1.0 - rng.uniform(0.1, 0.22) * shadow / max(shadow.max(), 1e-9)


def add_distractors(rng: Rng, bf: np.ndarray, size: int, *, debris_only: bool = False) -> np.ndarray:
    """Apply 1–2 distractors (debris, scratch, illumination) to a brightfield image."""
    kinds = (
        ["debris"] if debris_only else list(rng.choice(["debris", "scratch", "illumination"], rng.integers(1, 3), replace=False))
    )
    for kind in kinds:
        if kind == "debris":
            bf = bf * (1.0 - debris(rng, size))
        elif kind == "scratch":
            bf = bf * (1.0 + scratch(rng, size))
        else:
            bf = bf * illumination_shift(rng, size)
    return bf


def _finish(rng: Rng, channel: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """Brightness/contrast change around the channel mean, then clip and round to ``uint8``."""
    mean = float(channel.mean())
    return np.clip(np.rint(mean + gain * (channel - mean) + offset), 0, 255).astype(np.uint8)


def render_image(rng: Rng, size: int, wormed: bool) -> tuple[np.ndarray, float]:
    """One synthetic patch: ``(H, W, 3)`` RGB ``uint8`` and the fraction of its area covered by worm."""
    bf = brightfield_background(rng, size)
    red = red_background(rng, size)
    worm_frac = 0.0
    if wormed:
        worms, density, dead = sample_worms(rng, size)
        worm_frac = float(worms.mean())
        texture = 1.0 + 0.15 * _smooth_noise(rng, size, 0.8)
        faint = rng.random() < FAINT_WORM_SHARE  # out of the focal plane: paler and blurred
        opacity = rng.uniform(0.35, 0.55) if faint else rng.uniform(0.7, 0.9)
        transmission = 1.0 - np.clip(opacity * density * texture, 0.0, 0.97)
        bf = bf * ndi.gaussian_filter(transmission, 1.2 if faint else 0.5)
        glow = ndi.gaussian_filter(dead, 0.7) * rng.uniform(150.0, 320.0) * (0.8 + 0.2 * texture)
        red = red + glow + worms * rng.uniform(0.0, 10.0)
        if rng.random() < WORMED_DEBRIS_SHARE:
            bf = add_distractors(rng, bf, size, debris_only=True)
    elif rng.random() < DISTRACTOR_SHARE:
        bf = add_distractors(rng, bf, size)
    g = _finish(rng, bf, rng.uniform(0.85, 1.15), rng.normal(0.0, 6.0))
    r = _finish(rng, red, 1.0, 0.0)
    return np.stack([r, g, g], axis=-1), worm_frac


# ----------------------------------------------------------------------------------------------------------------------
# files


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB ``uint8`` array as PNG with fixed parameters and no metadata (byte-reproducible)."""
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()


def _write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(rgb))


def labeled_name(split: str, cls: str, index: int) -> str:
    return f"demo_{split}_{cls}_{index:03d}.png"


def batch_name(index: int) -> str:
    return f"img_{index:04d}.png"


def write_labeled(root: Path, seed: int, size: int, per_class: dict[str, int]) -> dict[str, dict[str, int]]:
    """``root/labeled/<split>/<cls>/*.png``; returns counts per split and class."""
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        counts[split] = {}
        for label, cls in enumerate(CLASSES):
            (root / "labeled" / split / cls).mkdir(parents=True, exist_ok=True)
            for index in range(per_class[split]):
                rgb, _ = render_image(image_rng(seed, "labeled", split, cls, index), size, wormed=label == 1)
                _write_image(root / "labeled" / split / cls / labeled_name(split, cls, index), rgb)
            counts[split][cls] = per_class[split]
    return counts


def batch_labels(seed: int, batch: str, n: int, worm_share: float) -> list[str]:
    """Labels of a batch's images in file order: ``round(n * worm_share)`` wormed, shuffled so that order reveals nothing."""
    n_wormed = round(n * worm_share)
    labels = np.array([CLASSES[1]] * n_wormed + [CLASSES[0]] * (n - n_wormed))
    return [str(v) for v in image_rng(seed, "batch-order", batch).permutation(labels)]


def write_batches(
    root: Path, seed: int, size: int, batches: Sequence[tuple[str, int]], worm_share: float
) -> dict[str, dict[str, int]]:
    """``root/batches/<batch>/*.png`` plus ``root/batches/labels.csv``; returns counts per batch and class."""
    counts: dict[str, dict[str, int]] = {}
    rows: list[dict[str, str]] = []
    (root / "batches").mkdir(parents=True, exist_ok=True)
    for batch, n in batches:
        (root / "batches" / batch).mkdir(parents=True, exist_ok=True)
        labels = batch_labels(seed, batch, n, worm_share)
        for index, cls in enumerate(labels):
            rgb, worm_frac = render_image(image_rng(seed, "batch", batch, index), size, wormed=cls == CLASSES[1])
            _write_image(root / "batches" / batch / batch_name(index), rgb)
            rows.append(
                {
                    "batch": batch,
                    "file": f"{batch}/{batch_name(index)}",
                    "label": cls,
                    "well": DEMO_WELL,
                    "worm_frac": f"{worm_frac:.4f}",
                }
            )
        counts[batch] = {cls: labels.count(cls) for cls in CLASSES}
    with open(root / "batches" / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABELS_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return counts


def _looks_replaceable(path: Path) -> bool:
    """An existing ``out_dir`` may be replaced if it is empty or holds nothing but ``labeled`` and ``batches``."""
    return {p.name for p in path.iterdir()} <= {"labeled", "batches"}


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` directory to ``out``; an existing ``out`` is moved aside first, then deleted.

    Directories cannot be renamed over non-empty ones, so there is a moment without ``out`` -- but never a
    half-written ``out``.
    """
    if not out.exists() and not out.is_symlink():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / out.name, out)  # put the previous dataset back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _check_args(size: int, per_class: dict[str, int], batches: Sequence[tuple[str, int]], worm_share: float) -> None:
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE}, got {size}")
    for split, n in per_class.items():
        if n < 0:
            raise ValueError(f"n_{split} must be >= 0, got {n}")
    if not 0.0 <= worm_share <= 1.0:
        raise ValueError(f"batch_worm_share must be in [0, 1], got {worm_share}")
    names = [name for name, _ in batches]
    if len(set(names)) != len(names):
        raise ValueError(f"batch names must be unique, got {names}")
    for name, n in batches:
        if not name or name.startswith(".") or "/" in name or "\\" in name or name == "labels.csv":
            raise ValueError(f"bad batch name {name!r}")
        if n < 0:
            raise ValueError(f"batch {name!r}: number of images must be >= 0, got {n}")


def generate_demo(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    size: int = 96,
    n_train: int = 24,
    n_dev: int = 12,
    n_test: int = 12,
    batches: Sequence[tuple[str, int]] = DEFAULT_BATCHES,
    batch_worm_share: float = 0.5,
) -> dict:
    """Write the demo dataset to ``out_dir`` (layout: module docstring) and return a summary of what was written.

    ``n_train``, ``n_dev`` and ``n_test`` are images *per class*; ``batches`` are ``(name, n_images)`` pairs of
    unlabeled batches, of which ``round(n_images * batch_worm_share)`` are wormed.  Everything is generated in a
    hidden temporary directory beside ``out_dir`` and renamed into place at the end, so an interrupted run never
    leaves a half dataset; an existing ``out_dir`` is replaced, but only if it holds nothing except ``labeled``
    and ``batches`` (so a typo cannot wipe an unrelated directory: :class:`FileExistsError`).
    """
    out = Path(out_dir).absolute()
    per_class = {"train": n_train, "dev": n_dev, "test": n_test}
    batches = [(str(name), int(n)) for name, n in batches]
    _check_args(size, per_class, batches, batch_worm_share)
    image_rng(seed)  # validates the seed
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and not _looks_replaceable(out):
        raise FileExistsError(
            f"{out} exists and does not look like a demo dataset (only 'labeled' and 'batches'); not replacing it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()  # not mkdtemp: the dataset gets the usual (umask) permissions, not 0700
    try:
        labeled = write_labeled(tmp, seed, size, per_class)
        batch_counts = write_batches(tmp, seed, size, batches, batch_worm_share)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_images = sum(sum(c.values()) for c in labeled.values()) + sum(sum(c.values()) for c in batch_counts.values())
    return {"out_dir": str(out), "seed": seed, "size": size, "labeled": labeled, "batches": batch_counts, "n_images": n_images}


# ----------------------------------------------------------------------------------------------------------------------
# command line


def _batch_arg(text: str) -> tuple[str, int]:
    name, sep, n = text.rpartition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:N, got {text!r}")
    try:
        return name, int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME:N with an integer N, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wormflow.demo", description="Write a small synthetic worm dataset (see module doc)."
    )
    p.add_argument("out_dir", help="output directory (replaced if it holds a previous demo dataset)")
    p.add_argument("--seed", type=int, default=0, help="random seed (>= 0); the same seed gives byte-identical files")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    p.add_argument("--n-train", type=int, default=24, help="train images per class (default 24)")
    p.add_argument("--n-dev", type=int, default=12, help="dev images per class (default 12)")
    p.add_argument("--n-test", type=int, default=12, help="test images per class (default 12)")
    p.add_argument(
        "--batch",
        dest="batches",
        action="append",
        type=_batch_arg,
        metavar="NAME:N",
        help="an unlabeled batch of N images (repeatable; default demo-batch-1:30 demo-batch-2:30)",
    )
    p.add_argument("--batch-worm-share", type=float, default=0.5, help="share of wormed images in each batch (default 0.5)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = generate_demo(
            args.out_dir,
            seed=args.seed,
            size=args.size,
            n_train=args.n_train,
            n_dev=args.n_dev,
            n_test=args.n_test,
            batches=args.batches if args.batches is not None else DEFAULT_BATCHES,
            batch_worm_share=args.batch_worm_share,
        )
    except (ValueError, FileExistsError) as exc:
        build_parser().error(str(exc))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
