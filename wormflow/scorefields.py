"""The fields' half of the score files: what a scoring job writes per tiled unit, how gather
concatenates it, and the one reader the summary, the report's thumbnails and the benchmark use.

Score part (one per method, seed and shard), beside the single images' columns::

    fields/ids                        the store's tiled-unit ids, in order (checked at gather)
    fields/units/{worm_share, n_tiles, n_in_area, n_wormed, max_score, pred}   one row per unit
    fields/tiles/{unit, y, x, in_area, score, pred}   one row per tile (unit = row in fields/ids;
                                      y, x = top-left corner; score NaN and pred -1 where in_area = 0)
    fields/maps/<k>                   uint8 H×W field map of unit k
    fields.attrs: tile, stride, min_in_area, map, map_threshold

Gathered ``scores.h5`` of a batch::

    fields/{ids, kind, well, files, sha256, hw, shard}   one row per tiled unit of every shard
                                      (files, sha256: JSON lists, the channel files in order)
    fields/thumbs/<k>                 the composite's thumbnail (h×w×3 uint8)
    <method>/fields/<column>          per unit, rows as in fields/ids
    <method>/tiles/<column>           per tile, ``unit`` indexing fields/ids
    <method>/maps/<k>                 uint8 H×W
    <method>/fields.attrs             as in the parts
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import h5py
import numpy as np

from .store import ImageStore, IncompleteFileError, open_complete, read_strings, read_tiled, tiled_columns, write_table

UNIT_COLUMNS = ("worm_share", "n_tiles", "n_in_area", "n_wormed", "max_score", "pred")
TILE_COLUMNS = ("unit", "y", "x", "in_area", "score", "pred")


# --------------------------------------------------------------------------- parts


def write_part_fields(f: h5py.File, ids: Sequence[str], units: dict, tiles: dict, attrs: dict) -> None:
    """The ``fields`` group of a score part (its maps are written as units finish: :func:`write_map`)."""
    grp = f.require_group("fields")
    _check_columns(units, len(ids), "units")
    n_tiles = len(tiles["unit"])
    _check_columns(tiles, n_tiles, "tiles")
    write_table(grp, {"ids": np.array(list(ids), dtype=object)})
    write_table(grp.create_group("units"), units)
    write_table(grp.create_group("tiles"), tiles)
    for k, v in attrs.items():
        grp.attrs[k] = v


def write_map(f: h5py.File, k: int, field_map: np.ndarray, filters: dict) -> None:
    h, w = field_map.shape
    f.create_dataset(f"fields/maps/{k}", data=field_map, chunks=(max(1, min(h, 64)), w), **filters)


def _check_columns(columns: dict, n: int, what: str) -> None:
    bad = {k: len(v) for k, v in columns.items() if len(v) != n}
    if bad:
        raise IncompleteFileError(f"fields/{what}: {n} rows expected, columns with other row counts: {bad}")


def check_part_fields(f: h5py.File, store: ImageStore, path: str) -> None:
    """A part's fields must be the store's tiled units, in order, each with its map and tiles."""
    units = store.tiled
    if not units and "fields" not in f:
        return
    if "fields" not in f:
        raise IncompleteFileError(f"{path}: the store has {len(units)} fields but the part scored none")
    grp = f["fields"]
    got = read_strings(grp["ids"])
    if got != [u.id for u in units]:
        raise IncompleteFileError(f"{path}: its {len(got)} field ids do not match the store's {len(units)} fields, in order")
    _check_columns({c: grp["units"][c] for c in UNIT_COLUMNS}, len(units), "units")
    n_tiles = grp["tiles"]["unit"].shape[0]
    _check_columns({c: grp["tiles"][c] for c in TILE_COLUMNS}, n_tiles, "tiles")
    maps = grp.get("maps", {})
    for k, u in enumerate(units):
        if str(k) not in maps or maps[str(k)].shape != tuple(u.hw):
            raise IncompleteFileError(f"{path}: the map of field {u.id} is missing or not {u.hw[1]}×{u.hw[0]}")


def read_part_field_ids(f: h5py.File) -> list[str]:
    return read_strings(f["fields/ids"]) if "fields" in f else []


# --------------------------------------------------------------------------- gather


def gather_field_units(f: h5py.File, stores: Sequence[ImageStore], filters: dict) -> list[int]:
    """The gathered file's ``fields`` table and thumbnails; returns each shard's first unit row."""
    units = [u for s in stores for u in s.tiled]
    grp = f.create_group("fields")
    cols = tiled_columns(units)
    cols["shard"] = np.array([k for k, s in enumerate(stores) for _ in s.tiled], dtype=np.int32)
    write_table(grp, cols)
    offsets, n = [], 0
    for s in stores:
        offsets.append(n)
        if s.tiled:
            with open_complete(s.path, "wormflow-images") as src:
                for j in range(len(s.tiled)):
                    grp.create_dataset(f"thumbs/{n + j}", data=src[f"tiled/thumb/{j}"][()], **filters)
        n += len(s.tiled)
    return offsets


def gather_method_fields(grp: h5py.Group, part_files: Sequence[str | None], offsets: Sequence[int], n_units: int) -> None:
    """``<method>/fields``, ``tiles`` and ``maps`` from the method's first-seed part of every shard."""
    units: dict[str, list] = {c: [] for c in UNIT_COLUMNS}
    tiles: dict[str, list] = {c: [] for c in TILE_COLUMNS}
    attrs: dict = {}
    maps = grp.create_group("maps")
    for path, offset in zip(part_files, offsets):
        if path is None:
            continue
        with open_complete(path, "wormflow-scores") as src:
            if "fields" not in src:
                continue
            fg = src["fields"]
            attrs = dict(fg.attrs)
            for c in UNIT_COLUMNS:
                units[c].append(fg["units"][c][()])
            for c in TILE_COLUMNS:
                tiles[c].append(fg["tiles"][c][()] + (offset if c == "unit" else 0))
            for name in fg["maps"]:
                maps.copy(fg["maps"][name], str(offset + int(name)))
    got = sum(len(v) for v in units["pred"])
    if got != n_units:
        raise IncompleteFileError(f"{grp.name}: {got} fields scored, {n_units} in the stores")
    fields = grp.create_group("fields")
    write_table(fields, {c: _cat(v, UNIT_DTYPES[c]) for c, v in units.items()})
    for k, v in attrs.items():
        fields.attrs[k] = v
    write_table(grp.create_group("tiles"), {c: _cat(v, TILE_DTYPES[c]) for c, v in tiles.items()})


UNIT_DTYPES = {
    "worm_share": np.float32,
    "n_tiles": np.int32,
    "n_in_area": np.int32,
    "n_wormed": np.int32,
    "max_score": np.float32,
    "pred": np.int8,
}
TILE_DTYPES = {"unit": np.int32, "y": np.int32, "x": np.int32, "in_area": np.uint8, "score": np.float32, "pred": np.int8}


def _cat(values: list, dtype) -> np.ndarray:
    return np.concatenate(values).astype(dtype) if values else np.zeros(0, dtype)


# --------------------------------------------------------------------------- reading


@dataclass
class MethodFields:
    """One method's results on a batch's fields."""

    units: dict[str, np.ndarray]  # UNIT_COLUMNS, one row per field
    tiles: dict[str, np.ndarray]  # TILE_COLUMNS
    attrs: dict


@dataclass
class FieldScores:
    """The fields of a gathered batch: their table and every method's results."""

    path: str
    units: list  # wormflow.store.TiledUnit, in row order
    methods: dict[str, MethodFields] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.units)

    def open(self):
        """The gathered file, checked complete: pass it to :meth:`map`/:meth:`thumb` to read many without reopening."""
        return open_complete(self.path, "wormflow-batch")

    def _read(self, key: str, f=None) -> np.ndarray:
        if f is not None:
            return f[key][()]
        with self.open() as f:
            return f[key][()]

    def map(self, method: str, k: int, f=None) -> np.ndarray:
        return self._read(f"{method}/maps/{k}", f)

    def thumb(self, k: int, f=None) -> np.ndarray:
        return self._read(f"fields/thumbs/{k}", f)


def read_field_scores(path: str, methods: Sequence[str]) -> FieldScores:
    """The ``fields`` table and each method's per-field and per-tile columns (maps read on demand)."""
    from .scorefile import attr_value

    with open_complete(path, "wormflow-batch") as f:
        fs = FieldScores(str(path), read_tiled(f.get("fields")))
        for m in methods:
            if m in f and "fields" in f[m]:
                grp = f[m]
                fs.methods[m] = MethodFields(
                    {c: grp["fields"][c][()] for c in UNIT_COLUMNS},
                    {c: grp["tiles"][c][()] for c in TILE_COLUMNS},
                    {k: attr_value(v) for k, v in grp["fields"].attrs.items()},
                )
    return fs


def files_of(fs: FieldScores) -> int:
    """How many files the batch's fields were made of."""
    return sum(len(u.files) for u in fs.units)
