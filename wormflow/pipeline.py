"""The workflow's steps as functions: manifest → decode shard → score shard → gather.

The Snakemake scripts in ``scripts/`` are thin wrappers around these.  Data flow one way:
a collection's manifest lists its files; each shard's images are decoded once into an image
store; one scoring job per shard runs every model on that store (the store is read once per
resolution, the models share the device) and writes one score *part* per (method, seed) plus an
index; gather concatenates the stores and parts of a collection into its ``scores.h5``.

(Longer than the package's ~400-line guideline on purpose: one function per rule with the checks between
the steps — part keys, row counts, ids against stores — next to each other, so a reader follows one shard
from manifest to gather in one file.)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .digest import code_digest, json_digest
from .imageio import DEFAULT_MAX_FILE_BYTES, ImageLoadError, decode_image, read_file_verified, resize_rgb
from .inventory import Manifest, build_manifest, sha256_file
from .scorefields import check_part_fields
from .scorefile import ScorePart, ScorePartWriter, gather_scores, read_part_ids
from .store import (
    ImageStore,
    ImageStoreWriter,
    IncompleteFileError,
    TiledUnit,
    chunk_rows,
    compression_kwargs,
    open_complete,
    reading,
)
from .tiling import Tiling, check_tileable, thumbnail

log = logging.getLogger(__name__)


def manifest_step(root: str, out: str, *, labeled: bool, shard_size: int, fields: dict | None = None) -> Manifest:
    """(Re)build a collection's manifest, re-hashing only files whose stat data changed; with the
    ``fields`` config section, channel files are grouped into fields (batches only)."""
    previous = None
    cache = Path(out).with_name(".manifest-cache.json")
    for candidate in (Path(out), cache):
        if candidate.is_file():
            try:
                previous = Manifest.read(candidate)
                break
            except (ValueError, KeyError, OSError) as exc:
                log.warning("ignoring unreadable previous manifest %s: %s", candidate, exc)
    if not Path(root).is_dir():
        raise FileNotFoundError(f"collection directory {root} does not exist")
    manifest = build_manifest(root, labeled=labeled, shard_size=shard_size, previous=previous, fields=fields)
    manifest.write(out)
    manifest.write(cache)  # survives Snakemake's removal of the output before a re-run
    log.info(
        "%s: %d files, %d quarantined before decoding, %d units (%d fields), %d shards",
        root,
        len(manifest.entries),
        len(manifest.entries) - len(manifest.candidates),
        len(manifest.units),
        sum(1 for u in manifest.units if u[0].unit),
        manifest.n_shards,
    )
    return manifest


DECODE_LIMITS = ("max_pixels", "min_side", "max_decoded_bytes", "max_aspect", "max_nonfinite_fraction")


def _verified_bytes(root: Path, entry, limits: dict) -> bytes:
    """The bytes the manifest listed, read beneath the root without following links or blocking; a file
    rewritten, replaced by a link or still being written since it was listed is "changed after listing"."""
    return read_file_verified(root, entry.relpath, entry.sha256, max_bytes=limits.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES))


def _decode_single(root: Path, entry, limits: dict, min_output_side: int) -> np.ndarray:
    data = _verified_bytes(root, entry, limits)
    return decode_image(root / entry.relpath, data=data, min_output_side=min_output_side, **{k: limits[k] for k in DECODE_LIMITS})


def _decode_field(root: Path, members: list, limits: dict, fields_cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """A field's channel files → its RGB composite and specimen area; FieldError/ImageLoadError say why not."""
    from .fields import compose_rgb, specimen_area
    from .fields.channels import decode_channel

    channels = {}
    for e in members:
        try:
            channels[e.channel] = decode_channel(root / e.relpath, data=_verified_bytes(root, e, limits), **limits)
        except ImageLoadError as exc:
            raise ImageLoadError(exc.path, f"channel {e.channel} ({e.relpath}): {exc.reason}") from None
    rgb = compose_rgb(channels, fields_cfg["composite"], fields_cfg["percentiles"], brightfield=fields_cfg["brightfield"])
    return rgb, specimen_area(channels[fields_cfg["brightfield"]], margin=fields_cfg["specimen_margin"])


def _decode_unit(root: Path, unit: list, sizes: list[int], limits: dict, fields_cfg: dict | None, tiling: Tiling | None):
    """One unit → ``("whole", images_by_size, hw)``, ``("tiled", TiledUnit, rgb, area, thumb)`` or
    ``("quarantine", reason)``.  A field, or an image larger than a tile in either direction, is kept at
    native resolution to be scored tile by tile; one that no tile of it would count is quarantined.
    Without ``tiling`` (labeled splits: one label per image) every image is whole."""
    from .fields import FieldError

    first = unit[0]
    try:
        if first.unit:
            rgb, area = _decode_field(root, unit, limits, fields_cfg or {})
            info = TiledUnit(first.unit, "field", first.well, [e.relpath for e in unit], [e.sha256 for e in unit], rgb.shape[:2])
        else:
            rgb = _decode_single(root, first, limits, max(sizes))
            if tiling is None or max(rgb.shape[:2]) <= tiling.tile:
                return ("whole", {s: resize_rgb(rgb, s) for s in sizes}, rgb.shape[:2])
            area = np.ones(rgb.shape[:2], bool)
            info = TiledUnit(first.relpath, "image", first.relpath, [first.relpath], [first.sha256], rgb.shape[:2])
        check_tileable(area, tiling)
    except (ImageLoadError, FieldError) as exc:
        return ("quarantine", f"field {first.unit}: {exc.reason}" if first.unit else exc.reason)
    return ("tiled", info, rgb, area, thumbnail(rgb, tiling.thumbnail_width))


def decode_shard_step(
    manifest_path: str,
    shard: int,
    out: str,
    *,
    sizes: list[int],
    threads: int = 1,
    limits: dict,
    fields: dict | None = None,
    tiling: dict | None = None,
    hdf5: dict | None = None,
) -> dict:
    """Decode one shard's units once into an image store: each single image at every resolution the
    methods need, each field (and each image larger than ``tile``) composed at native resolution.

    ``limits``: the ``decode`` section of the config (sizes, bytes, aspect ratio, non-finite share);
    ``fields``: the ``fields`` section (channel map, stretch, specimen margin); ``tiling``: the
    ``tiling`` section (tile size, stride, share of a tile in the specimen area, thumbnail width);
    both None for a labeled split.
    """
    tile_cfg = Tiling.from_config(tiling) if tiling is not None else None
    with reading(manifest_path):
        manifest = Manifest.read(manifest_path)
    units = manifest.shard_units(shard)
    root = Path(manifest.root)
    sizes = sorted(set(int(s) for s in sizes))
    writer = ImageStoreWriter(
        out,
        sizes,
        chunk_rows(manifest.shard_size),
        compression_kwargs(hdf5),
        {"collection_root": manifest.root, "shard": shard, "shard_digest": manifest.shard_digest(shard)},
    )
    counts = {"whole": 0, "tiled": 0, "quarantine": 0}
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            results = pool.map(lambda u: _decode_unit(root, u, sizes, limits, fields, tile_cfg), units)
            for unit, result in zip(units, results):
                counts[result[0]] += 1
                if result[0] == "quarantine":
                    for e in unit:
                        writer.add_quarantine(e.relpath, result[1])
                elif result[0] == "tiled":
                    writer.add_tiled(*result[1:])
                else:
                    e = unit[0]
                    writer.add(e.relpath, e.label, e.sha256, tuple(int(v) for v in result[2]), result[1])
    except BaseException as exc:
        writer.abort(exc)
        raise
    writer.close()
    log.info(
        "shard %d: %d images, %d fields/large images, %d quarantined units",
        shard,
        counts["whole"],
        counts["tiled"],
        counts["quarantine"],
    )
    return counts


def prefetched(iterator: Iterable) -> Iterator:
    """Iterate while the next item is read in a background thread (HDF5 inflate overlaps the model).

    An exception raised while reading the next item is raised here, in the consumer, at the
    point where that item would have been returned: a read error never ends a shard early.
    """
    it = iter(iterator)
    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        future = pool.submit(next, it, done)
        while True:
            item = future.result()  # re-raises the reader's exception
            if item is done:
                return
            future = pool.submit(next, it, done)
            yield item


# Package code whose change changes scores: a score part is reused only when this, the model file
# and the shard's content are unchanged.
SCORING_CODE = ("scoring.py", "colour.py", "decision.py", "transforms.py", "runtime.py", "methods")


def scoring_code_digest() -> str:
    pkg = Path(__file__).resolve().parent
    files = [str(p.relative_to(pkg)) for p in sorted((pkg / "methods").glob("*")) if p.suffix in (".py", ".yaml")]
    return code_digest([*(m for m in SCORING_CODE if m != "methods"), *files])


def _part_name(method: str, seed: int) -> str:
    return f"{method}.seed{seed}"


def _reusable(part: Path, store: ImageStore) -> bool:
    try:
        if not part.is_file() or read_part_ids(part) != store.ids:
            return False
        with open_complete(part, "wormflow-scores") as f:
            check_part_fields(f, store, str(part))
        return True
    except (IncompleteFileError, OSError, KeyError):
        return False


def score_shard_step(
    store_path: str,
    models: dict[str, dict[int, str]],
    index_out: str,
    *,
    batch_size: int,
    device: str = "auto",
    shard_size: int,
    hdf5: dict | None = None,
    tiling: dict | None = None,
) -> dict:
    """Score one image store with every model (``{method: {seed: model.pt}}``) and write the shard's index.

    Each (method, seed) becomes a score part in ``<shard>.parts/``, named by a key of the shard's
    content, the model file's SHA-256 and the scoring code: a part whose key is unchanged (another
    method was retrained, or a method was added) is reused, not recomputed.  The store is read
    once per image resolution, for all models needing it.  Parts no longer listed are removed.
    """
    with reading(store_path):
        store = ImageStore.open(store_path)
    parts_dir = _parts_dir(index_out)
    parts_dir.mkdir(parents=True, exist_ok=True)
    scoring = scoring_code_digest()
    plan = []
    for method, seeds in models.items():
        for seed, model_path in seeds.items():
            checkpoint = sha256_file(model_path)
            key = json_digest(
                {
                    "shard": store.attrs.get("shard_digest", ""),
                    "ids": store.ids,
                    "fields": [u.id for u in store.tiled],
                    "tiling": Tiling.from_config(tiling).as_dict() if store.tiled else None,
                    "model": checkpoint,
                    "code": scoring,
                }
            )
            plan.append((method, int(seed), model_path, checkpoint, parts_dir / f"{_part_name(method, int(seed))}.{key}.h5"))
    todo = [p for p in plan if not _reusable(p[4], store)]
    log.info("shard %s: %d score parts reused, %d to score", store_path, len(plan) - len(todo), len(todo))
    _score_parts(
        store,
        todo,
        device=device,
        batch_size=batch_size,
        rows=chunk_rows(shard_size),
        filters=compression_kwargs(hdf5),
        tiling=tiling,
    )
    index = {
        "store": os.path.basename(store_path),
        "shard_digest": store.attrs.get("shard_digest", ""),
        "n_images": len(store),
        "n_fields": len(store.tiled),
        "parts": [{"method": m, "seed": s, "file": part.name, "checkpoint_sha256": c} for m, s, _, c, part in plan],
    }
    keep = {part.name for *_, part in plan}
    for stale in parts_dir.glob("*.h5"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    atomic_write_text(index_out, json.dumps(index, indent=1))
    return {"scored": len(todo), "reused": len(plan) - len(todo), "images": len(store), "fields": len(store.tiled)}


def _guarded(batches: Iterable[np.ndarray], path: str) -> Iterator[np.ndarray]:
    """The store's batches; a read error mid-shard removes the damaged store (rebuilt next run) and fails."""
    with reading(path):
        yield from batches


def _parts_dir(index_path: str | Path) -> Path:
    """``<shard>.parts/`` beside ``<shard>.scores.json`` (see :func:`wormflow.paths.score_parts`)."""
    index_path = Path(index_path)
    return index_path.with_name(index_path.name.removesuffix(".scores.json") + ".parts")


def _score_parts(
    store: ImageStore, todo: list, *, device: str, batch_size: int, rows: int, filters: dict, tiling: dict | None = None
) -> None:
    from .artifact import Artifact  # torch: imported only by the jobs that need it

    artifacts = {(m, s): Artifact.load(path) for m, s, path, _, _ in todo}
    scorers = {key: art.scorer(device) for key, art in artifacts.items()}
    by_size: dict[int, list] = {}
    for item in todo:
        by_size.setdefault(scorers[item[:2]].image_size, []).append(item)
    writers = {item[:2]: ScorePartWriter(item[4], rows, filters) for item in todo}
    try:
        parts = _score_images(store, by_size, scorers, batch_size)
        fields = _score_fields(store, by_size, scorers, artifacts, writers, tiling, batch_size) if store.tiled else {}
        for method, seed, _, checkpoint, part in todo:
            scorer, art = scorers[(method, seed)], artifacts[(method, seed)]
            columns = {"ids": np.array(store.ids, dtype=object), **_concat(parts.get((method, seed), {}), scorer, len(store))}
            attrs = {
                "method": method,
                "seed": seed,
                "checkpoint_sha256": checkpoint,
                "threshold": float(art.threshold),
                "threshold_rule": art.threshold_rule,
                "config_hash": art.config_hash,
                "model_package_version": art.package_version,
                "weights_init": art.weights_init,
                "device": str(scorer.device),
                "shard": os.path.basename(store.path),
                "shard_digest": store.attrs.get("shard_digest", ""),
                "part_key": part.name,
                "feature_names": list(scorer.feature_names),
            }
            writers.pop((method, seed)).close(columns, attrs, fields.get((method, seed)))
    except BaseException as exc:
        for writer in writers.values():
            writer.abort(exc)
        raise


def _score_images(store: ImageStore, by_size: dict, scorers: dict, batch_size: int) -> dict:
    """Every single image, read once per resolution, through every model of that resolution."""
    parts: dict = {}
    if not len(store):
        return parts
    for size, items in sorted(by_size.items()):
        for images in prefetched(_guarded(store.iter_images(size, batch_size), store.path)):
            for item in items:
                out = scorers[item[:2]](images)
                acc = parts.setdefault(item[:2], {})
                for name, value in (("score", out.score), ("pred", out.pred), ("features", out.features), *out.maps.items()):
                    acc.setdefault(name, []).append(value)
    return parts


def _score_fields(
    store: ImageStore, by_size: dict, scorers: dict, artifacts: dict, writers: dict, tiling, batch_size: int
) -> dict:
    """Every counted tile of every field, in batches across fields, through every model; each field's
    image read once (see :mod:`wormflow.tiling`).  Returns the part's ``fields`` payload per model."""
    from .tiling import FieldAccumulator, Tiling, iter_tile_batches, plan_unit, resize_maps, resize_tiles

    t = Tiling.from_config(tiling)
    with reading(store.path):
        areas = store.tiled_areas()
    plans = [plan_unit(a, t) for a in areas]
    accs, map_names = {}, {}
    for key, scorer in scorers.items():
        map_names[key], threshold = field_map_setup(scorer, artifacts[key], t.tile)
        accs[key] = FieldAccumulator(plans, areas, t.tile, scorer.threshold, threshold, writers[key].add_map)
    images = _guarded(((k, store.tiled_image(k)) for k in range(len(store.tiled))), store.path)
    for unit, idx, tiles in prefetched(iter_tile_batches(images, plans, t.tile, batch_size)):
        for size, items in sorted(by_size.items()):
            x = resize_tiles(tiles, size)
            for item in items:
                key = item[:2]
                out = scorers[key](x)
                if map_names[key]:
                    tile_maps = resize_maps(out.maps[map_names[key]], t.tile)
                else:
                    tile_maps = np.broadcast_to(np.clip(out.score * 255.0, 0, 255)[:, None, None], (len(x), t.tile, t.tile))
                accs[key].add(unit, idx, out.score, out.pred, tile_maps)
    ids = [u.id for u in store.tiled]
    result = {}
    for key, acc in accs.items():
        units, tile_cols = acc.columns()
        attrs = {**t.as_dict(), "map": map_names[key] or "tile scores", "map_threshold": acc.map_threshold}
        result[key] = (ids, units, tile_cols, attrs)
    return result


def field_map_setup(scorer, artifact, tile: int) -> tuple[str | None, float]:
    """``(map name or None, map threshold in map units)`` of a model: its per-pixel map and the threshold
    chosen on dev at training, or its tile scores ×255 and its decision threshold."""
    name = scorer.method.field_map
    if name is None:
        return None, float(scorer.threshold) * 255.0
    chosen = artifact.extra.get("field_map")
    if not chosen or chosen.get("map") != name or int(chosen.get("tile", -1)) != tile:
        why = "before field maps existed" if not chosen else f"for {chosen.get('tile')} px tiles, not {tile}"
        raise ValueError(
            f"{scorer.method.name}: this model's map threshold was chosen {why}; "
            f"retrain it (`wormflow retrain --methods {scorer.method.name}`) to score fields"
        )
    return name, float(chosen["threshold"])


def _concat(acc: dict, scorer, n: int) -> dict:
    """Concatenate per-batch outputs; an empty shard still gets correctly shaped, typed datasets."""
    if n:
        return {k: np.concatenate(v) for k, v in acc.items()}
    s = scorer.image_size
    empty = {
        "score": np.zeros(0, np.float32),
        "pred": np.zeros(0, np.int8),
        "features": np.zeros((0, len(scorer.feature_names)), np.float32),
    }
    shapes = {"recon": (0, s, s, 3)}
    empty.update({name: np.zeros(shapes.get(name, (0, s, s)), np.uint8) for name in scorer.method.maps})
    return empty


def read_score_index(path: str) -> list[ScorePart]:
    """The score parts a scoring job listed (paths resolved beside the index)."""
    data = json.loads(Path(path).read_text())
    return [ScorePart(p["method"], int(p["seed"]), str(_parts_dir(path) / p["file"])) for p in data["parts"]]


def gather_step(
    manifest_path: str,
    store_paths: list[str],
    index_paths: list[str],
    out: str,
    *,
    methods: list[str],
    shard_size: int,
    hdf5: dict | None = None,
    batch: str = "",
) -> dict:
    """Concatenate one collection's shards into ``scores.h5`` (one group per method).

    Every input is checked first: a store, index or part that cannot be read — or a part whose
    ids do not match its store's — is removed with what was made from it, so that the next run
    decodes or scores that shard again, and the gather fails naming it.
    """
    with reading(manifest_path):
        manifest = Manifest.read(manifest_path)
    parts = []
    for store, index in zip(store_paths, index_paths):
        with reading(store, index):
            ids = ImageStore.open(store).ids
        with reading(index):
            listed = read_score_index(index)
        for part in listed:
            with reading(part.path, index):
                if read_part_ids(part.path) != ids:
                    raise IncompleteFileError(f"{part.path}: its ids do not match the store {store}")
        parts.append(listed)
    # A name that is not valid UTF-8 (kept with surrogate escapes) cannot be stored as an HDF5 string: write it as \xNN escapes.
    quarantine = [
        (e.relpath.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), e.quarantine)
        for e in manifest.entries
        if e.quarantine
    ]
    attrs = {
        "batch": batch,
        "collection_root": manifest.root,
        "n_files": len(manifest.entries),
        "manifest_digest": manifest.content_digest(),
        "methods": list(methods),
    }
    return gather_scores(
        out,
        store_paths,
        parts,
        quarantine,
        manifest.root,
        attrs,
        chunk_rows(shard_size),
        compression_kwargs(hdf5),
    )
