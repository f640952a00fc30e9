"""Score files: the per-shard score parts the scoring job writes, the gathered ``scores.h5`` of
a collection (a batch or the test split), and the one reader of it that evaluation, the ledger
and the galleries use.  Layouts: see :mod:`wormflow.store` and the README."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_path
from .scorefields import check_part_fields, gather_field_units, gather_method_fields, write_map, write_part_fields
from .store import ImageStore, IncompleteFileError, mark_complete, open_complete, read_strings, utc_now, write_table

# --------------------------------------------------------------------------- writing: score parts and the gathered file


class RowCountError(IncompleteFileError):
    """Columns of a score table that do not have one row per image id."""


def check_rows(columns: dict, n: int, where: str) -> None:
    """Every column must have exactly ``n`` rows (one per image id), or nothing is written."""
    bad = {k: len(v) for k, v in columns.items() if len(v) != n}
    if bad:
        raise RowCountError(f"{where}: {n} image ids but columns with other row counts: {bad}")


class ScorePartWriter:
    """Writes one (method, seed, shard) score part atomically: field maps as their units finish
    (:meth:`add_map`), then the columns (:meth:`close`); :meth:`abort` leaves nothing behind."""

    def __init__(self, path, rows: int, filters: dict):
        self.path, self.rows, self.filters = str(path), rows, filters
        self._ctx = atomic_path(path)
        self.f = h5py.File(self._ctx.__enter__(), "w")

    def add_map(self, k: int, field_map: np.ndarray) -> None:
        write_map(self.f, k, field_map, self.filters)

    def close(self, columns: dict, attrs: dict, fields: tuple | None = None) -> None:
        """``columns``: one row per image id; ``fields``: ``(unit ids, unit columns, tile columns, attrs)``."""
        try:
            check_rows(columns, len(columns["ids"]), self.path)
            attrs = dict(attrs)
            names = attrs.pop("feature_names", [])
            write_table(self.f, columns, self.rows, self.filters)
            if "features" in self.f:
                self.f["features"].attrs["names"] = np.array(names, dtype=object)
            if fields is not None:
                write_part_fields(self.f, *fields)
            mark_complete(self.f, "wormflow-scores", attrs)
            self.f.close()
        except BaseException as exc:
            self.abort(exc)
            raise
        self._ctx.__exit__(None, None, None)

    def abort(self, exc: BaseException | None = None) -> None:
        with contextlib.suppress(Exception):
            self.f.close()
        self._ctx.__exit__(type(exc) if exc else RuntimeError, exc or RuntimeError("aborted"), None)


def write_score_part(path, columns: dict, attrs: dict, rows: int, filters: dict, fields: tuple | None = None) -> None:
    """Write one (method, seed, shard) score part atomically; every column has ``len(ids)`` rows."""
    ScorePartWriter(path, rows, filters).close(columns, attrs, fields)


def read_part_ids(path) -> list[str]:
    with open_complete(path, "wormflow-scores") as f:
        return read_strings(f["ids"])


def _copy_dataset_chunks(src: h5py.Dataset, dst: h5py.Dataset, offset: int) -> None:
    """Append ``src`` into ``dst`` at ``offset``; raw chunk copy (no recompression) where the chunk grids agree."""
    n = src.shape[0]
    if n == 0:
        return
    same_layout = (
        src.chunks is not None
        and src.chunks == dst.chunks
        and src.compression == dst.compression
        and src.compression_opts == dst.compression_opts
        and offset % src.chunks[0] == 0
    )
    if same_layout:
        rows = src.chunks[0]
        tail = (0,) * (src.ndim - 1)
        for start in range(0, n, rows):
            if start + rows > n:  # partial last chunk: copy values
                dst[offset + start : offset + n] = src[start:n]
                break
            filter_mask, raw = src.id.read_direct_chunk((start, *tail))
            dst.id.write_direct_chunk((offset + start, *tail), raw, filter_mask)
        return
    dst[offset : offset + n] = src[()]


@dataclass
class ScorePart:
    """Where one (method, seed) of one shard was scored."""

    method: str
    seed: int
    path: str


def gather_scores(
    out_path,
    store_paths: Sequence[str],
    parts: Sequence[Sequence[ScorePart]],
    manifest_quarantine: Sequence[tuple[str, str]],
    source_root: str,
    attrs: dict,
    rows: int,
    filters: dict,
) -> dict:
    """Concatenate one collection's image stores and score parts (per shard, in order) into one file.

    Before anything is written, every part's ids must equal its shard store's ids, in order, and
    every column must have one row per id: a short or shifted part fails the gather instead of
    putting scores on the wrong images.  The first seed of a method is its group (``<method>/``);
    with several seeds their scores also go to ``<method>/seed_scores`` (N × seeds).
    """
    if len(parts) != len(store_paths):
        raise IncompleteFileError(f"{len(store_paths)} shard stores but score parts for {len(parts)} shards")
    stores = [ImageStore.open(p) for p in store_paths]
    by_method: dict[str, list[list[ScorePart]]] = {}
    for k, (store, shard_parts) in enumerate(zip(stores, parts)):
        for part in shard_parts:
            _check_part(part.path, store, k)
            by_method.setdefault(part.method, [[] for _ in stores])[k].append(part)
    for method, per_shard in by_method.items():
        seeds = [[p.seed for p in ps] for ps in per_shard]
        if any(s != seeds[0] for s in seeds):
            raise IncompleteFileError(f"{method}: shards were scored with different seeds {seeds}")
    ids = [i for s in stores for i in s.ids]
    labels = np.concatenate([s.labels for s in stores]) if stores else np.zeros(0, np.int8)
    paths = [str(Path(source_root) / i) for i in ids]
    quarantine = [(r, m, "manifest") for r, m in manifest_quarantine]
    quarantine += [(r, m, "decode") for s in stores for r, m in s.quarantine]
    methods = list(attrs.get("methods", by_method))
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        write_table(
            f.create_group("images"),
            {
                "ids": np.array(ids, dtype=object),
                "paths": np.array(paths, dtype=object),
                "labels": labels.astype(np.int8),
                "sha256": np.array([h for s in stores for h in s.sha256], dtype=object),
            },
        )
        write_table(
            f.create_group("quarantine"),
            {
                "ids": np.array([r for r, _, _ in quarantine], dtype=object),
                "reasons": np.array([m for _, m, _ in quarantine], dtype=object),
                "stage": np.array([s for _, _, s in quarantine], dtype=object),
            },
        )
        offsets = gather_field_units(f, stores, filters)
        n_fields = sum(len(s.tiled) for s in stores)
        for method in methods:
            per_shard = by_method.get(method, [[] for _ in stores])
            _gather_method(f, method, ids, paths, [ps[0].path for ps in per_shard if ps], rows, filters)
            if per_shard and len(per_shard[0]) > 1:
                _gather_seeds(f[method], per_shard)
            if n_fields:
                gather_method_fields(f[method], [ps[0].path if ps else None for ps in per_shard], offsets, n_fields)
        n_field_files = sum(len(u.files) for s in stores for u in s.tiled)
        counts = {"n_scored": len(ids) + n_field_files, "n_quarantined": len(quarantine), "n_fields": n_fields}
        mark_complete(f, "wormflow-batch", {**attrs, **counts, "n_images": len(ids), "methods": methods})
    return counts


def _check_part(path: str, store: ImageStore, shard: int) -> None:
    with open_complete(path, "wormflow-scores") as f:
        got = read_strings(f["ids"])
        if got != store.ids:
            raise IncompleteFileError(
                f"{path}: its {len(got)} ids do not match shard {shard}'s {len(store.ids)} images ({store.path}), in order"
            )
        check_rows({name: f[name] for name in f if isinstance(f[name], h5py.Dataset)}, len(got), path)
        check_part_fields(f, store, path)


def _gather_method(
    f: h5py.File, method: str, ids: list[str], paths: list[str], shard_files: Sequence[str], rows, filters
) -> None:
    grp = f.create_group(method)
    write_table(grp, {"ids": np.array(ids, dtype=object), "paths": np.array(paths, dtype=object)})
    srcs = [open_complete(p, "wormflow-scores") for p in shard_files]
    try:
        if srcs:
            for k, v in srcs[0].attrs.items():
                if k not in ("complete", "format", "created_utc", "shard", "part_key"):
                    grp.attrs[k] = v
        grp.attrs["method"] = method
        grp.attrs["created_utc"] = utc_now()
        if not srcs:  # an empty collection: typed, empty columns, so readers need no special case
            write_table(grp, {"score": np.zeros(0, np.float32), "pred": np.zeros(0, np.int8)})
            return
        for name in (n for n, v in srcs[0].items() if n != "ids" and isinstance(v, h5py.Dataset)):
            first = srcs[0][name]
            kwargs = {"chunks": (min(rows, len(ids)), *first.shape[1:]), **filters} if first.chunks is not None and ids else {}
            dst = grp.create_dataset(name, shape=(len(ids), *first.shape[1:]), dtype=first.dtype, **kwargs)
            for k, v in first.attrs.items():
                dst.attrs[k] = v
            offset = 0
            for s in srcs:
                _copy_dataset_chunks(s[name], dst, offset)
                offset += s[name].shape[0]
    finally:
        for s in srcs:
            s.close()


def _gather_seeds(grp: h5py.Group, per_shard: list[list[ScorePart]]) -> None:
    """``seed_scores`` (N × seeds, float32) and per-seed thresholds and checkpoints."""
    columns, thresholds, checkpoints = [], [], []
    for j, _part in enumerate(per_shard[0]):
        values = []
        for ps in per_shard:
            with open_complete(ps[j].path, "wormflow-scores") as f:
                values.append(f["score"][()])
                if ps is per_shard[0]:
                    thresholds.append(float(f.attrs["threshold"]))
                    checkpoints.append(str(f.attrs["checkpoint_sha256"]))
        columns.append(np.concatenate(values))
    ds = grp.create_dataset("seed_scores", data=np.stack(columns, 1).astype(np.float32))
    ds.attrs["seeds"] = np.array([p.seed for p in per_shard[0]], dtype=np.int64)
    ds.attrs["thresholds"] = np.array(thresholds, dtype=np.float64)
    ds.attrs["checkpoint_sha256"] = np.array(checkpoints, dtype=object)


# --------------------------------------------------------------------------- reading the gathered file


@dataclass
class ScoreFile:
    """Method columns aligned to ``images/ids`` (a method that did not score an image has NaN there)."""

    path: str
    ids: list[str]
    labels: np.ndarray
    attrs: dict
    score: dict[str, np.ndarray] = field(default_factory=dict)
    pred: dict[str, np.ndarray] = field(default_factory=dict)
    threshold: dict[str, float] = field(default_factory=dict)
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # per method: row in its group of each image, -1 if absent
    method_attrs: dict[str, dict] = field(default_factory=dict)
    seed_scores: dict[str, tuple[np.ndarray, list[float]]] = field(default_factory=dict)  # (N × seeds, thresholds)
    quarantine: list[dict] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(self.score)


def attr_value(value: object) -> object:
    """An HDF5 attribute as a plain Python value (bytes decoded, arrays as lists)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [attr_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _aligned(values: np.ndarray, rows: np.ndarray, fill: float) -> np.ndarray:
    out = np.full(len(rows), fill, dtype=np.float64)
    ok = rows >= 0
    if ok.any() and len(values):
        out[ok] = values[rows[ok]]
    return out


def read_score_file(path: str | os.PathLike, methods: Sequence[str] | None = None) -> ScoreFile:
    """Ids, labels, per-method scores/predictions/thresholds and the quarantine table of a gathered file."""
    with open_complete(path, "wormflow-batch") as f:
        ids = read_strings(f["images/ids"])
        labels = f["images/labels"][()].astype(np.int64)
        sf = ScoreFile(str(path), ids, labels, {k: attr_value(v) for k, v in f.attrs.items()})
        sf.quarantine = _read_quarantine(f)
        index = {i: k for k, i in enumerate(ids)}
        wanted = list(methods) if methods is not None else list(sf.attrs.get("methods", []))
        for m in wanted:
            if m not in f or "ids" not in f[m] or "score" not in f[m]:
                continue
            grp = f[m]
            rows = np.full(len(ids), -1, dtype=np.int64)
            for r, i in enumerate(read_strings(grp["ids"])):
                if i in index:
                    rows[index[i]] = r
            sf.rows[m] = rows
            sf.method_attrs[m] = {k: attr_value(v) for k, v in grp.attrs.items()}
            sf.threshold[m] = float(grp.attrs["threshold"]) if "threshold" in grp.attrs else float("nan")
            sf.score[m] = _aligned(grp["score"][()].astype(np.float64), rows, np.nan)
            sf.pred[m] = _aligned(grp["pred"][()].astype(np.float64), rows, np.nan)
            if "seed_scores" in grp:
                ds = grp["seed_scores"]
                values = ds[()].astype(np.float64)
                aligned = np.stack([_aligned(values[:, j], rows, np.nan) for j in range(values.shape[1])], 1)
                sf.seed_scores[m] = (aligned, [float(t) for t in ds.attrs["thresholds"]])
    return sf


def _read_quarantine(f) -> list[dict]:
    q = f["quarantine"]
    ids = read_strings(q["ids"])
    return [{"id": i, "reason": r, "stage": s} for i, r, s in zip(ids, read_strings(q["reasons"]), read_strings(q["stage"]))]


def read_method_rows(path: str, method: str, names: Sequence[str], rows: Sequence[int]) -> dict[str, np.ndarray]:
    """``{dataset: array}`` of the given rows (in the given order) of ``<method>/<dataset>``."""
    out: dict[str, np.ndarray] = {}
    if not rows:
        return out
    order = np.argsort(rows)
    with open_complete(path, "wormflow-batch") as f:
        for name in names:
            if method in f and name in f[method]:
                block = f[method][name][np.asarray(rows)[order].tolist()]
                out[name] = block[np.argsort(order)]
    return out
