"""Helpers the Snakemake rules call at DAG-building time (kept here so they are tested).

Nothing here opens an image: DAG building only lists directories and reads
``stat`` data and the manifests that earlier runs wrote, so a dry run over
100,000 images stays fast.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from pathlib import Path

from . import METHODS

log = logging.getLogger(__name__)

BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@=,-]*$")
LABELED_SPLITS = ("train", "dev", "test")
PACKAGE_DIR = Path(__file__).resolve().parent
# Modules whose code decides a trained model; a change retrains (see code_digest).
TRAINING_MODULES = (
    "models.py",
    "losses.py",
    "train.py",
    "scoring.py",
    "decision.py",
    "transforms.py",
    "colour.py",
    "weights.py",
    "runtime.py",
)


def discover_batches(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Return ``(batches, rejected)``: sub-directories of ``root`` usable as batch names, and the others.

    Hidden directories (``.``-prefixed) are ignored silently (they are never
    batches); other names must match :data:`BATCH_NAME` (they become file
    paths and wildcards) and are otherwise reported as rejected, never dropped
    silently.
    """
    root = Path(root)
    if not root.is_dir():
        return [], []
    ok, rejected = [], []
    with os.scandir(root) as it:
        for d in sorted(it, key=lambda e: e.name):
            if d.name.startswith(".") or not d.is_dir(follow_symlinks=False):
                continue
            (ok if BATCH_NAME.match(d.name) else rejected).append(d.name)
    for name in rejected:
        log.warning("batch directory %r skipped: names must match %s", name, BATCH_NAME.pattern)
    return ok, rejected


def enabled_methods(config: dict) -> list[str]:
    return [m for m in METHODS if config["methods"][m]["enabled"]]


def image_sizes(config: dict) -> list[int]:
    """Every resolution an image store must hold: each enabled method's, plus the baseline's."""
    sizes = {config["methods"][m]["image_size"] for m in enabled_methods(config)}
    sizes.add(config["evaluation"]["baseline_image_size"])
    return sorted(sizes)


@functools.lru_cache(maxsize=4096)
def _manifest_summary(path: str, mtime_ns: int) -> dict:
    with open(path) as fh:
        data = json.load(fh)
    return {
        "n_shards": data["n_shards"],
        "shard_digests": data["shard_digests"],
        # manifests written before data_digest existed: the shard digests stand in for it
        "data_digest": data.get("data_digest") or section_digest({"shards": data["shard_digests"]}),
        "n_files": data["n_files"],
    }


def manifest_summary(path: str | os.PathLike) -> dict:
    """Shard count, per-shard and whole-collection content digests of a manifest (cached by mtime)."""
    path = str(path)
    return _manifest_summary(path, os.stat(path).st_mtime_ns)


def code_digest(modules: tuple[str, ...] = TRAINING_MODULES) -> str:
    """Digest of the package code a trained model depends on (a change retrains)."""
    h = hashlib.sha256()
    for name in modules:
        h.update(name.encode())
        h.update((PACKAGE_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def section_digest(section: dict) -> str:
    return hashlib.sha256(json.dumps(section, sort_keys=True).encode()).hexdigest()[:16]
