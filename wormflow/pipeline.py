"""The workflow's steps as functions: manifest → decode shard → score shard → gather.

The Snakemake scripts in ``scripts/`` are thin wrappers around these.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .imageio import ImageLoadError, decode_image, resize_rgb
from .inventory import Manifest, build_manifest
from .inventory import sha256_file as file_sha256
from .store import (
    ImageStore,
    ImageStoreWriter,
    chunk_rows,
    compression_kwargs,
    gather_scores,
    write_score_shard,
)

log = logging.getLogger(__name__)


def manifest_step(root: str, out: str, *, labeled: bool, shard_size: int) -> Manifest:
    """(Re)build a collection's manifest, re-hashing only files whose stat data changed."""
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
    manifest = build_manifest(root, labeled=labeled, shard_size=shard_size, previous=previous)
    manifest.write(out)
    manifest.write(cache)  # survives Snakemake's removal of the output before a re-run
    log.info(
        "%s: %d files, %d quarantined before decoding, %d shards",
        root,
        len(manifest.entries),
        len(manifest.entries) - len(manifest.candidates),
        manifest.n_shards,
    )
    return manifest


def _decode_one(root: Path, relpath: str, sizes: list[int], max_pixels: int, min_side: int):
    try:
        rgb = decode_image(root / relpath, max_pixels=max_pixels, min_side=min_side, min_output_side=max(sizes))
    except ImageLoadError as exc:
        return None, exc.reason
    return ({s: resize_rgb(rgb, s) for s in sizes}, rgb.shape[:2]), None


def decode_shard_step(
    manifest_path: str,
    shard: int,
    out: str,
    *,
    sizes: list[int],
    threads: int = 1,
    max_pixels: int,
    min_side: int,
    hdf5: dict | None = None,
) -> dict:
    """Decode one shard's images once, at every resolution the methods need, into an image store."""
    manifest = Manifest.read(manifest_path)
    entries = manifest.shard(shard)
    root = Path(manifest.root)
    sizes = sorted(set(int(s) for s in sizes))
    writer = ImageStoreWriter(
        out,
        sizes,
        chunk_rows(manifest.shard_size),
        compression_kwargs(hdf5),
        {"collection_root": manifest.root, "shard": shard, "shard_digest": manifest.shard_digest(shard)},
    )
    n_ok = 0
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            results = pool.map(lambda e: _decode_one(root, e.relpath, sizes, max_pixels, min_side), entries)
            for entry, (decoded, reason) in zip(entries, results):
                if decoded is None:
                    writer.add_quarantine(entry.relpath, reason)
                    continue
                images, hw = decoded
                writer.add(entry.relpath, entry.label, entry.sha256, tuple(int(v) for v in hw), images)
                n_ok += 1
    except BaseException as exc:
        writer.abort(exc)
        raise
    writer.close()
    log.info("shard %d: %d decoded, %d quarantined", shard, n_ok, len(entries) - n_ok)
    return {"decoded": n_ok, "quarantined": len(entries) - n_ok}


class _Prefetch:
    """Read the next batch from HDF5 in a background thread while the model runs on the current one."""

    def __init__(self, iterator):
        self._it = iter(iterator)
        self._next = None
        self._thread = None
        self._start()

    def _start(self):
        def work():
            self._next = next(self._it, None)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def __iter__(self):
        while True:
            self._thread.join()
            item = self._next
            if item is None:
                return
            self._start()
            yield item


def score_shard_step(
    store_path: str,
    model_path: str,
    out: str,
    *,
    batch_size: int,
    device: str = "auto",
    shard_size: int,
    hdf5: dict | None = None,
) -> dict:
    """Score one image store with one trained method and write the method's score shard."""
    from .train import load_artifact, scorer_from_artifact  # torch: imported only by the jobs that need it

    artifact = load_artifact(model_path)
    scorer = scorer_from_artifact(artifact, device)
    store = ImageStore.open(store_path)
    parts: dict[str, list[np.ndarray]] = {}
    for images in _Prefetch(store.iter_images(scorer.image_size, batch_size)):
        outputs = scorer(images)
        for name in ("score", "pred", "features", "recon", "error_map", "colour_mask"):
            value = getattr(outputs, name)
            if value is not None:
                parts.setdefault(name, []).append(value)
    columns = {"ids": np.array(store.ids, dtype=object)}
    columns.update(_concat_parts(parts, scorer, len(store)))
    attrs = {
        "method": scorer.method,
        "checkpoint_sha256": file_sha256(model_path),
        "threshold": float(artifact["threshold"]),
        "threshold_rule": artifact["threshold_rule"],
        "config_hash": artifact["config_hash"],
        "model_package_version": artifact["package_version"],
        "weights_init": artifact["weights_init"],
        "seed": artifact["seed"],
        "device": str(scorer.device),
        "shard": os.path.basename(store_path),
        "feature_names": list(scorer.feature_names),
    }
    write_score_shard(out, columns, attrs, chunk_rows(shard_size), compression_kwargs(hdf5))
    return {"scored": len(store)}


def _concat_parts(parts: dict, scorer, n: int) -> dict:
    """Concatenate per-batch outputs; an empty shard still gets correctly shaped, typed datasets."""
    s = scorer.image_size
    empty = {
        "score": np.zeros(0, np.float32),
        "pred": np.zeros(0, np.int8),
        "features": np.zeros((0, len(scorer.feature_names)), np.float32),
    }
    if scorer.method in ("vae", "gan"):
        empty.update(
            recon=np.zeros((0, s, s, 3), np.uint8),
            error_map=np.zeros((0, s, s), np.uint8),
            colour_mask=np.zeros((0, s, s), np.uint8),
        )
    if n == 0:
        return empty
    return {k: np.concatenate(parts[k]) for k in empty}


def gather_step(
    manifest_path: str,
    store_paths: list[str],
    score_paths: dict[str, list[str]],
    out: str,
    *,
    shard_size: int,
    hdf5: dict | None = None,
    batch: str = "",
) -> dict:
    """Concatenate one collection's shards into ``scores.h5`` (one group per method)."""
    manifest = Manifest.read(manifest_path)
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
    }
    return gather_scores(
        out,
        list(score_paths),
        store_paths,
        score_paths,
        quarantine,
        manifest.root,
        attrs,
        chunk_rows(shard_size),
        compression_kwargs(hdf5),
    )
