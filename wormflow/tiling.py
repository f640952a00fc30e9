"""Scoring fields tile by tile: tiles of many fields in large model batches, per-tile scores and
decisions, a stitched field-resolution map per method and the per-field numbers.

A *tiled unit* is a field composed from its channel files (or a single image larger than one
tile), kept at native resolution in the shard's image store (:class:`wormflow.store.TiledUnit`).
Its tiles are ``tile``×``tile`` crops (the training patches' side) on a ``stride`` grid with
edge-aligned last row and column (:func:`wormflow.fields.tile_grid`), so every pixel is covered.
A tile *counts* when at least ``min_in_area`` of it lies in the specimen area (the well with its
rim; all of a single image); only those are scored, the others are kept in the grid marked
``in_area = 0`` with a NaN score.  Each counted tile is resized to the method's input exactly as
a training patch is (:func:`wormflow.imageio.resize_rgb`) and scored like one.

The field map of a method (uint8, field resolution):

* methods with a per-pixel map (:attr:`Method.field_map`: the VAE's and the GAN's reconstruction
  error, ``|x̂ − x|`` averaged over the channels, ×127.5) — each tile's map area-resampled to the
  tile's native size and stitched, overlaps averaged;
* the others (ResNet-50, the dark-pixel floor) — their tile scores (``P(wormed)`` ×255) stitched at
  the tiling stride: each pixel is the mean of the (at most four, at half-tile stride) tiles
  covering it.  No class-activation map: the classifier's own probability on the tiles is what
  its decision uses.

Pixels no counted tile covers are 0.  The *estimated worm area share* of a field is the share of
its specimen-area pixels whose map value reaches the method's *map threshold*: for a per-pixel
map the value ``t`` chosen on the dev patches so that "at least 5 % of the patch's pixels reach
``t``" (the patch rule's worm share, :data:`wormflow.fields.tiles.WORM_FRAC_MIN`) best separates
wormed from no_wormed patches (:func:`map_threshold`, by the configured threshold rule); for a
tile-score map the method's decision threshold ×255.  A field is flagged (``pred`` 1) when at
least one counted tile is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .fields.compose import FieldError
from .fields.tiles import WORM_FRAC_MIN, tile_grid, tile_in_area
from .imageio import resize_rgb
from .scorefields import UNIT_COLUMNS, UNIT_DTYPES


@dataclass(frozen=True)
class Tiling:
    """The ``tiling`` section of the config."""

    tile: int = 64
    stride: int = 32
    min_in_area: float = 0.5
    thumbnail_width: int = 160

    @classmethod
    def from_config(cls, cfg: dict | None) -> Tiling:
        cfg = cfg or {}
        t = cls(**{k: cfg[k] for k in ("tile", "stride", "min_in_area", "thumbnail_width") if k in cfg})
        if not 1 <= t.stride <= t.tile:
            raise ValueError(f"tiling.stride must lie in 1..tiling.tile ({t.tile}), got {t.stride}")
        return t

    def as_dict(self) -> dict:
        return {"tile": self.tile, "stride": self.stride, "min_in_area": self.min_in_area}


@dataclass
class UnitTiles:
    """One unit's tile grid: top-left corners and whether each tile counts."""

    ys: np.ndarray  # int32
    xs: np.ndarray  # int32
    in_area: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.ys)


def plan_unit(area: np.ndarray, tiling: Tiling) -> UnitTiles:
    """The tile grid of a unit with this specimen ``area`` (H×W bool); FieldError when it is smaller than a tile."""
    h, w = area.shape
    ys, xs = tile_grid(h, w, tiling.tile, tiling.stride)
    inside = tile_in_area(area, ys, xs, tiling.tile, tiling.min_in_area)
    return UnitTiles(ys.astype(np.int32), xs.astype(np.int32), inside)


def check_tileable(area: np.ndarray, tiling: Tiling) -> None:
    """FieldError unless at least one tile of the unit counts (the unit can be scored)."""
    if not area.any():
        raise FieldError("no specimen area found (no well in the brightfield channel?)")
    if not plan_unit(area, tiling).in_area.any():
        raise FieldError(f"no {tiling.tile}×{tiling.tile} tile lies {tiling.min_in_area:.0%} in the specimen area")


def thumbnail(rgb: np.ndarray, width: int) -> np.ndarray:
    """The composite shrunk to ``width`` px (aspect kept, antialiased), uint8 h×w×3."""
    h, w = rgb.shape[:2]
    height = max(1, round(h * width / w))
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def map_to_thumbnail(field_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 field map shrunk to ``size`` = (w, h) (area averaging)."""
    return np.asarray(Image.fromarray(field_map).resize(size, Image.Resampling.BOX), dtype=np.uint8)


# --------------------------------------------------------------------------- tiles → model batches


def iter_tile_batches(
    images: Iterator[tuple[int, np.ndarray]], plans: Sequence[UnitTiles], tile: int, batch: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Counted tiles of many units in batches of ``batch``: ``(unit index, tile index, tiles (B,T,T,3) uint8)``.

    ``images`` yields ``(unit index, RGB)`` in unit order; each unit's image is read once.
    """
    units: list[np.ndarray] = []
    idx: list[np.ndarray] = []
    crops: list[np.ndarray] = []
    n = 0
    for k, rgb in images:
        plan = plans[k]
        which = np.flatnonzero(plan.in_area)
        for start in range(0, len(which), batch):
            sel = which[start : start + batch]
            units.append(np.full(len(sel), k, np.int32))
            idx.append(sel.astype(np.int32))
            crops.append(np.stack([rgb[y : y + tile, x : x + tile] for y, x in zip(plan.ys[sel], plan.xs[sel])]))
            n += len(sel)
            while n >= batch:
                yield _take(units, idx, crops, batch)
                n -= batch
    if n:
        yield _take(units, idx, crops, n)


def _take(units: list, idx: list, crops: list, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n`` rows of the pending lists (which keep the rest)."""
    u, i, c = np.concatenate(units), np.concatenate(idx), np.concatenate(crops)
    units[:], idx[:], crops[:] = [u[n:]], [i[n:]], [c[n:]]
    return u[:n], i[:n], c[:n]


def resize_tiles(tiles: np.ndarray, size: int) -> np.ndarray:
    """Tiles ``(B,T,T,3)`` at a method's input size, as training patches are resized."""
    if tiles.shape[1] == size:
        return tiles
    return np.stack([resize_rgb(t, size) for t in tiles]) if len(tiles) else np.zeros((0, size, size, 3), np.uint8)


def resize_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """Per-image maps ``(B,S,S)`` → ``(B,size,size)`` float32 by area averaging (exact block means when S = k·size)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[1] == size:
        return maps
    import torch
    import torch.nn.functional as F

    return F.interpolate(torch.from_numpy(maps)[:, None], size=(size, size), mode="area")[:, 0].numpy()


def share_quantile(maps: np.ndarray, share: float = WORM_FRAC_MIN) -> np.ndarray:
    """Per map, the largest ``t`` such that at least ``share`` of its pixels reach ``t`` (float64)."""
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    n = flat.shape[1]
    k = max(1, int(np.ceil(share * n - 1e-9)))
    return np.partition(flat, n - k, axis=1)[:, n - k] if len(flat) else np.zeros(0)


def map_threshold(dev_maps: np.ndarray, labels: np.ndarray, tile: int, rule: str, n_boot: int) -> dict:
    """The map threshold of a per-pixel map, chosen on the dev patches (see the module doc).

    ``dev_maps``: the method's uint8 maps of the dev patches at its input size.
    """
    from .decision import choose_threshold

    values = share_quantile(resize_maps(dev_maps, tile))
    choice = choose_threshold(values, np.asarray(labels), rule=rule, n_boot=n_boot)
    return {"threshold": float(choice.threshold), "share": WORM_FRAC_MIN, "tile": int(tile), "dev_f1": float(choice.dev_f1)}


# --------------------------------------------------------------------------- per-method results


class FieldAccumulator:
    """One method's tile scores, stitched maps and per-unit numbers over a store's tiled units.

    Tiles arrive in unit order (:func:`iter_tile_batches`); a unit's map is finished, handed to
    ``on_map(k, map)`` and dropped as soon as its last counted tile is in, so memory holds one or
    two units' accumulators at a time, not the shard's maps.
    """

    def __init__(
        self, plans: Sequence[UnitTiles], areas: Sequence[np.ndarray], tile: int, threshold: float, map_threshold: float, on_map
    ):
        self.plans, self.areas, self.tile = plans, areas, tile
        self.threshold, self.map_threshold, self.on_map = threshold, map_threshold, on_map
        self.score = [np.full(len(p), np.nan, np.float32) for p in plans]
        self.pred = [np.full(len(p), -1, np.int8) for p in plans]
        self.left = [int(p.in_area.sum()) for p in plans]
        self.units = {c: np.zeros(len(plans), UNIT_DTYPES[c]) for c in UNIT_COLUMNS}
        self._acc: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        empty = [k for k, n in enumerate(self.left) if n == 0]
        if empty:
            raise FieldError(f"fields {empty[:5]} have no tile in the specimen area (the store and the tiling config disagree)")

    def add(self, unit: np.ndarray, idx: np.ndarray, score: np.ndarray, pred: np.ndarray, tile_maps: np.ndarray) -> None:
        """One batch: scores, predictions and native-size tile maps ``(B,T,T)`` in map units (0–255)."""
        t = self.tile
        for k in np.unique(unit):
            rows = np.flatnonzero(unit == k)
            self.score[k][idx[rows]] = score[rows]
            self.pred[k][idx[rows]] = pred[rows]
            if k not in self._acc:
                shape = self.areas[k].shape
                self._acc[k] = (np.zeros(shape, np.float32), np.zeros(shape, np.uint16))
            acc, cnt = self._acc[k]
            ys, xs = self.plans[k].ys[idx[rows]], self.plans[k].xs[idx[rows]]
            for r, y, x in zip(rows, ys, xs):
                acc[y : y + t, x : x + t] += tile_maps[r]
                cnt[y : y + t, x : x + t] += 1
            self.left[k] -= len(rows)
            if self.left[k] == 0:
                self._finish(int(k))

    def _finish(self, k: int) -> None:
        acc, cnt = self._acc.pop(k)
        field_map = np.zeros(acc.shape, np.uint8)
        covered = cnt > 0
        field_map[covered] = np.clip(np.rint(acc[covered] / cnt[covered]), 0, 255).astype(np.uint8)
        area = self.areas[k]
        inside = self.plans[k].in_area
        wormed = self.pred[k][inside] == 1
        self.units["worm_share"][k] = float((field_map[area] >= self.map_threshold).mean())
        self.units["n_tiles"][k] = len(self.plans[k])
        self.units["n_in_area"][k] = int(inside.sum())
        self.units["n_wormed"][k] = int(wormed.sum())
        self.units["max_score"][k] = float(np.max(self.score[k][inside]))
        self.units["pred"][k] = int(wormed.any())
        self.on_map(k, field_map)

    def columns(self) -> tuple[dict, dict]:
        """``(per-unit columns, per-tile columns)``; every unit must be finished."""
        unfinished = [k for k, n in enumerate(self.left) if n]
        if unfinished or self._acc:
            raise RuntimeError(f"tiles of units {unfinished[:5]} were never scored")
        tiles = {
            "unit": np.concatenate([np.full(len(p), k, np.int32) for k, p in enumerate(self.plans)] or [np.zeros(0, np.int32)]),
            "y": np.concatenate([p.ys for p in self.plans] or [np.zeros(0, np.int32)]),
            "x": np.concatenate([p.xs for p in self.plans] or [np.zeros(0, np.int32)]),
            "in_area": np.concatenate([p.in_area for p in self.plans] or [np.zeros(0, bool)]).astype(np.uint8),
            "score": np.concatenate(self.score or [np.zeros(0, np.float32)]),
            "pred": np.concatenate(self.pred or [np.zeros(0, np.int8)]),
        }
        return dict(self.units), tiles
