"""HDF5 files: what every writer shares (atomic, complete-flagged, parallel chunk compression)
and the shard image stores; the score files are in :mod:`wormflow.scorefile`.

Every file is written under a temporary name and renamed into place when
complete (:mod:`wormflow.atomic`), and carries ``attrs["complete"] = True``
set just before closing; :func:`open_complete` refuses a file without it.  A
job killed mid-write therefore never leaves a file that a later step accepts.

``HDF5_USE_FILE_LOCKING`` is set to ``FALSE`` before h5py is imported unless
the environment already sets it: cluster filesystems (NFS, Lustre, GPFS) often
cannot lock, and each file has exactly one writer (one job), so locking adds
nothing.

Layouts (also in the README):

* **image store** (``shards/<k>.images.h5``): ``ids`` (str), ``labels``
  (int8, -1 unlabeled), ``sha256`` (str), ``orig_hw`` (int32, N×2),
  ``images/<size>`` (uint8, N×S×S×3) for each resolution the methods need,
  ``quarantine/{ids,reasons}``.
* **score part** (``shards/<k>.parts/<method>.seed<s>.<key>.h5``, one per
  method and seed of a shard, listed by the scoring job's ``shards/<k>.scores.json``):
  ``ids``, ``score`` (float32), ``pred`` (int8), ``features`` (float32, N×F,
  ``attrs["names"]``) and the method's maps (e.g. VAE/GAN ``recon`` uint8
  N×S×S×3, ``error_map`` uint8 N×S×S = mean absolute error ×127.5,
  ``colour_mask`` uint8 0/1); attributes ``method``, ``seed``,
  ``checkpoint_sha256``, ``threshold``, ``config_hash``, ``package_version``,
  ``created_utc``.  Every column has one row per id (checked when written and
  when gathered).
* **batch file** (``scores.h5``): ``images/{ids,paths,labels,sha256}``,
  ``quarantine/{ids,reasons,stage}`` and one group per method with the first
  seed's part datasets (concatenated in shard order) plus ``ids`` and ``paths``;
  with several seeds also ``<method>/seed_scores`` (N × seeds).

(Slightly over the package's ~400-line guideline: the image store's writer and reader share the layout they
must agree on, row for row; they stay together.)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from . import __version__  # noqa: E402
from .atomic import atomic_path  # noqa: E402

STR = h5py.string_dtype("utf-8")
CHUNK_ROWS = 16
DEFAULT_COMPRESSION = {"compression": "gzip", "compression_opts": 4}


class IncompleteFileError(RuntimeError):
    """An HDF5 file that was not completely written (or is not ours)."""


class DamagedInputError(RuntimeError):
    """A derived input (a store, a score part, a manifest) could not be read; it was removed so that the
    next run rebuilds it from its source instead of failing on it every night."""


# What reading a damaged or truncated file raises: our completeness check, h5py's OSError/KeyError,
# zlib (parallel chunk inflate), ValueError (a chunk of the wrong size, JSON that does not parse).
READ_ERRORS = (IncompleteFileError, OSError, KeyError, ValueError, zlib.error)


@contextlib.contextmanager
def reading(path: str | os.PathLike, *dependents: str | os.PathLike):
    """Read ``path`` inside this block; if it turns out unreadable, remove it (and ``dependents``, files
    that were made from it) and raise :class:`DamagedInputError` saying so.

    Only for files the workflow derives from the images (stores, parts, indexes, gathered scores,
    manifests): removing one costs a rebuild on the next run and loses nothing.
    """
    try:
        yield
    except READ_ERRORS as exc:
        removed = [str(p) for p in (path, *dependents) if _unlink(p)]
        raise DamagedInputError(
            f"{path} could not be read ({type(exc).__name__}: {exc}); removed {', '.join(removed) or 'nothing'} "
            "so that the next run rebuilds it from its source"
        ) from exc


def _unlink(path: str | os.PathLike) -> bool:
    try:
        Path(path).unlink()
        return True
    except FileNotFoundError:
        return False


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def chunk_rows(shard_size: int) -> int:
    """Rows per chunk, chosen so that shard boundaries fall on chunk boundaries (for zero-copy gathers)."""
    return max(1, math.gcd(int(shard_size), CHUNK_ROWS))


def compression_kwargs(cfg: dict | None) -> dict:
    """h5py filter arguments from the ``hdf5`` config section."""
    if not cfg:
        return dict(DEFAULT_COMPRESSION)
    name = cfg.get("compression", "gzip")
    if name == "none":
        return {}
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": int(cfg.get("level", 4))}
    return {"compression": name}


def _create(group: h5py.Group, name: str, data: np.ndarray, rows: int, filters: dict) -> h5py.Dataset:
    data = np.asarray(data)
    if data.dtype.kind in "OUS":
        return group.create_dataset(name, data=np.asarray(data, dtype=object), dtype=STR)
    if data.ndim >= 2 and data.shape[0] > 0:
        return write_chunked(group, name, data, rows, filters)
    return group.create_dataset(name, data=data)


def _deflate_level(filters: dict) -> int | None:
    if filters.get("compression") == "gzip" and not filters.get("shuffle"):
        return int(filters.get("compression_opts", 4))
    return None


def write_chunked(group: h5py.Group, name: str, data: np.ndarray, rows: int, filters: dict) -> h5py.Dataset:
    """Create a chunked dataset; with gzip, compress chunks in parallel threads (zlib releases the GIL).

    The raw chunks are written with ``write_direct_chunk``; the result is an
    ordinary gzip-filtered dataset that any HDF5 reader opens.  Compression,
    not the GPU, is what limits scoring throughput otherwise.
    """
    data = np.ascontiguousarray(data)
    n = data.shape[0]
    rows = max(1, min(rows, n)) if n else 1
    ds = group.create_dataset(name, shape=data.shape, dtype=data.dtype, chunks=(rows, *data.shape[1:]), **filters)
    if n == 0:
        return ds
    level = _deflate_level(filters)
    if level is None or n <= rows:
        ds[...] = data
        return ds
    starts = list(range(0, n - n % rows, rows))
    tail = (0,) * (data.ndim - 1)
    for start, raw in zip(starts, _pool().map(lambda s: zlib.compress(data[s : s + rows].tobytes(), level), starts)):
        ds.id.write_direct_chunk((start, *tail), raw)
    if n % rows:
        ds[n - n % rows :] = data[n - n % rows :]
    return ds


def read_rows(ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    """``ds[start:stop]``; for gzip datasets the raw chunks are inflated in parallel threads.

    h5py inflates chunks one after another in the calling thread, which caps
    a GPU scoring job at a few hundred MB/s of images; zlib releases the GIL.
    """
    if stop <= start:
        return ds[start:stop]
    if ds.chunks is None or ds.compression != "gzip" or ds.shuffle or ds.fletcher32 or start % ds.chunks[0]:
        return ds[start:stop]
    rows = ds.chunks[0]
    tail = (0,) * (ds.ndim - 1)
    raws = [ds.id.read_direct_chunk((s, *tail)) for s in range(start, stop, rows)]

    def inflate(item):
        mask, raw = item
        data = raw if mask & 1 else zlib.decompress(raw)  # bit 0 set: deflate was skipped for this chunk
        return np.frombuffer(data, dtype=ds.dtype).reshape(ds.chunks)

    return np.concatenate(list(_pool().map(inflate, raws)))[: stop - start]


_POOL = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, min(16, len(os.sched_getaffinity(0)))))
    return _POOL


def write_table(group: h5py.Group, columns: dict, rows: int = CHUNK_ROWS, filters: dict | None = None) -> None:
    for name, data in columns.items():
        _create(group, name, data, rows, filters or {})


def mark_complete(f: h5py.File, kind: str, attrs: dict) -> None:
    for k, v in attrs.items():
        f.attrs[k] = v
    f.attrs["format"] = kind
    f.attrs["package_version"] = __version__
    f.attrs["created_utc"] = utc_now()
    f.attrs["complete"] = True


def open_complete(path: str | os.PathLike, kind: str | None = None) -> h5py.File:
    """Open an HDF5 file for reading, refusing it unless it was completely written."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise IncompleteFileError(f"{path}: not a readable HDF5 file ({exc})") from None
    if not f.attrs.get("complete", False) or (kind and f.attrs.get("format") != kind):
        f.close()
        raise IncompleteFileError(f"{path}: incomplete or not a {kind or 'wormflow'} file")
    return f


def read_strings(ds: h5py.Dataset) -> list[str]:
    return [s.decode("utf-8") if isinstance(s, bytes) else s for s in ds[()]] if ds.shape[0] else []


# --------------------------------------------------------------------------- image store


@dataclass
class TiledUnit:
    """A field (or a single image larger than a tile) kept at native resolution, to be scored tile by tile."""

    id: str  # the field id, or the image's relative path
    kind: str  # "field" or "image"
    well: str  # the plate well (fields named with one), else the id
    files: list[str]  # its files: the channel files of a field, in channel order, or the image itself
    sha256: list[str]
    hw: tuple[int, int]


class ImageStoreWriter:
    """Streams decoded images into an image store; call :meth:`add` / :meth:`add_tiled`, then :meth:`close`.

    Images no larger than a tile are stored resized to every method's resolution (``images/<S>``,
    rows in chunks); fields and larger images at native resolution, one dataset each
    (``tiled/rgb/<k>``, H×W×3) with their specimen area (``tiled/area/<k>``, H×W 0/1), a thumbnail
    of the composite for the report (``tiled/thumb/<k>``, h×w×3) and metadata
    (``tiled/{ids,kind,well,files,sha256,hw}``, ``files``/``sha256`` JSON lists per unit).
    """

    def __init__(self, path, sizes: Sequence[int], rows: int, filters: dict, attrs: dict):
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self.f = h5py.File(self._tmp, "w")
        self.sizes = list(sizes)
        self.rows = rows
        self.filters = filters
        self.attrs = attrs
        self.meta = {"ids": [], "labels": [], "sha256": [], "orig_hw": []}
        self.quarantine: list[tuple[str, str]] = []
        self.tiled: list[TiledUnit] = []
        grp = self.f.create_group("images")
        self.ds = {
            s: grp.create_dataset(
                str(s), shape=(0, s, s, 3), maxshape=(None, s, s, 3), dtype=np.uint8, chunks=(rows, s, s, 3), **filters
            )
            for s in self.sizes
        }
        self._pending: dict[int, list[np.ndarray]] = {s: [] for s in self.sizes}

    def add(self, relpath: str, label: int, sha256: str, orig_hw: tuple[int, int], images: dict[int, np.ndarray]) -> None:
        self.meta["ids"].append(relpath)
        self.meta["labels"].append(label)
        self.meta["sha256"].append(sha256)
        self.meta["orig_hw"].append(orig_hw)
        for s in self.sizes:
            self._pending[s].append(images[s])
        if len(self._pending[self.sizes[0]]) >= self.rows:
            self._flush()

    def _flush(self) -> None:
        """Write whole chunks at once, compressed in parallel (a row-by-row write would recompress each chunk)."""
        blocks = {s: np.stack(b) for s, b in self._pending.items() if b}
        if not blocks:
            return
        level = _deflate_level(self.filters)
        for s, block in blocks.items():
            ds = self.ds[s]
            n = ds.shape[0]
            ds.resize(n + len(block), axis=0)
            if level is not None and len(block) == self.rows and n % self.rows == 0:
                ds.id.write_direct_chunk((n, 0, 0, 0), zlib.compress(block.tobytes(), level))
            else:
                ds[n:] = block
            self._pending[s] = []

    def add_tiled(self, unit: TiledUnit, rgb: np.ndarray, area: np.ndarray, thumb: np.ndarray) -> None:
        k = len(self.tiled)
        h, w = rgb.shape[:2]
        rows = max(1, min(h, 64))
        self.f.create_dataset(f"tiled/rgb/{k}", data=rgb, chunks=(rows, w, 3), **self.filters)
        self.f.create_dataset(f"tiled/area/{k}", data=area.astype(np.uint8), chunks=(rows, w), **self.filters)
        self.f.create_dataset(f"tiled/thumb/{k}", data=thumb, **self.filters)
        self.tiled.append(unit)

    def add_quarantine(self, relpath: str, reason: str) -> None:
        self.quarantine.append((relpath, reason))

    def close(self) -> None:
        self._flush()
        f = self.f
        write_table(
            f,
            {
                "ids": np.array(self.meta["ids"], dtype=object),
                "labels": np.array(self.meta["labels"], dtype=np.int8),
                "sha256": np.array(self.meta["sha256"], dtype=object),
                "orig_hw": np.array(self.meta["orig_hw"], dtype=np.int32).reshape(-1, 2),
            },
        )
        q = f.create_group("quarantine")
        write_table(
            q,
            {
                "ids": np.array([r for r, _ in self.quarantine], dtype=object),
                "reasons": np.array([m for _, m in self.quarantine], dtype=object),
            },
        )
        write_table(f.require_group("tiled"), tiled_columns(self.tiled))
        attrs = {**self.attrs, "n_images": len(self.meta["ids"]), "n_tiled": len(self.tiled), "sizes": self.sizes}
        mark_complete(f, "wormflow-images", attrs)
        f.close()
        self._ctx.__exit__(None, None, None)

    def abort(self, exc) -> None:
        self.f.close()
        self._ctx.__exit__(type(exc), exc, None)


def tiled_columns(units: Sequence[TiledUnit]) -> dict:
    return {
        "ids": np.array([u.id for u in units], dtype=object),
        "kind": np.array([u.kind for u in units], dtype=object),
        "well": np.array([u.well for u in units], dtype=object),
        "files": np.array([json.dumps(u.files) for u in units], dtype=object),
        "sha256": np.array([json.dumps(u.sha256) for u in units], dtype=object),
        "hw": np.array([u.hw for u in units], dtype=np.int32).reshape(-1, 2),
    }


def read_tiled(group) -> list[TiledUnit]:
    """The tiled units listed in a ``tiled``/``fields`` group (none in stores written before fields existed)."""
    if group is None or "ids" not in group:
        return []
    columns = [read_strings(group[k]) for k in ("ids", "kind", "well", "files", "sha256")]
    hw = group["hw"][()]
    return [
        TiledUnit(i, kind, well, json.loads(files), json.loads(sha), (int(h), int(w)))
        for (i, kind, well, files, sha), (h, w) in zip(zip(*columns), hw)
    ]


@dataclass
class ImageStore:
    """A read-only view of an image store."""

    path: str
    ids: list[str]
    labels: np.ndarray
    sha256: list[str]
    quarantine: list[tuple[str, str]]
    attrs: dict
    tiled: list[TiledUnit]

    @classmethod
    def open(cls, path) -> ImageStore:
        with open_complete(path, "wormflow-images") as f:
            return cls(
                path=str(path),
                ids=read_strings(f["ids"]),
                labels=f["labels"][()],
                sha256=read_strings(f["sha256"]),
                quarantine=list(zip(read_strings(f["quarantine/ids"]), read_strings(f["quarantine/reasons"]))),
                attrs=dict(f.attrs),
                tiled=read_tiled(f.get("tiled")),
            )

    def tiled_image(self, k: int) -> np.ndarray:
        """The ``k``-th tiled unit's RGB composite (H×W×3 uint8)."""
        with open_complete(self.path, "wormflow-images") as f:
            return f[f"tiled/rgb/{k}"][()]

    def tiled_areas(self) -> list[np.ndarray]:
        """Every tiled unit's specimen area (H×W bool), in order."""
        with open_complete(self.path, "wormflow-images") as f:
            return [f[f"tiled/area/{k}"][()].astype(bool) for k in range(len(self.tiled))]

    def tiled_thumbs(self) -> list[np.ndarray]:
        """Every tiled unit's composite thumbnail (h×w×3 uint8), in order."""
        with open_complete(self.path, "wormflow-images") as f:
            return [f[f"tiled/thumb/{k}"][()] for k in range(len(self.tiled))]

    def __len__(self) -> int:
        return len(self.ids)

    def iter_images(self, size: int, batch: int) -> Iterable[np.ndarray]:
        """Yield ``(b, S, S, 3)`` uint8 arrays in order (chunks decompressed in parallel)."""
        with open_complete(self.path, "wormflow-images") as f:
            ds = f["images"][str(size)]
            rows = ds.chunks[0] if ds.chunks else 1
            batch = max(rows, batch - batch % rows)  # whole chunks per read
            for start in range(0, ds.shape[0], batch):
                yield read_rows(ds, start, min(start + batch, ds.shape[0]))

    def images(self, size: int) -> np.ndarray:
        with open_complete(self.path, "wormflow-images") as f:
            ds = f["images"][str(size)]
            return read_rows(ds, 0, ds.shape[0])

    @property
    def sizes(self) -> list[int]:
        """The resolutions stored."""
        return [int(s) for s in self.attrs["sizes"]]

    def rows(self, size: int, rows: Sequence[int]) -> np.ndarray:
        """The images at ``rows`` (increasing) at resolution ``size``."""
        with open_complete(self.path, "wormflow-images") as f:
            return f["images"][str(size)][list(rows)]
