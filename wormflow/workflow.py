"""Helpers the Snakemake rules call at DAG-building time (kept here so they are tested).

Nothing here opens an image or imports torch: DAG building only lists directories and reads
``stat`` data, the manifests and the models' JSON sidecars that earlier runs wrote, so a dry
run over 100,000 images stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path

from . import methods
from .config import method_schema_paths
from .digest import code_digest, json_digest

log = logging.getLogger(__name__)

BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@=,-]*$")
# Package code every trained model depends on (besides its method's own module, schema and `code`).
TRAINING_CODE = ("train.py", "scoring.py", "runtime.py", "data.py", "artifact.py", "methods/base.py", "methods/__init__.py")


def discover_batches(root: str | os.PathLike) -> tuple[list[str], list[tuple[str, str]]]:
    """Return ``(batches, rejected)``: sub-directories of ``root`` usable as batch names, and the others.

    Hidden directories (``.``-prefixed) are ignored silently (they are never batches); other
    names must match :data:`BATCH_NAME` (they become file paths and wildcards) and are otherwise
    reported as rejected ``(name, reason)``, never dropped silently.
    """
    root = Path(root)
    if not root.is_dir():
        return [], []
    ok, rejected = [], []
    with os.scandir(root) as it:
        for d in sorted(it, key=lambda e: e.name):
            if d.name.startswith(".") or not d.is_dir(follow_symlinks=False):
                continue
            if BATCH_NAME.match(d.name):
                ok.append(d.name)
            else:
                rejected.append((d.name, f"unusable directory name (names must match {BATCH_NAME.pattern})"))
    for name, reason in rejected:
        log.warning("batch directory %r skipped: %s", name, reason)
    return ok, rejected


def method_schemas(config: dict) -> dict[str, Path]:
    """The schema file each method section of the config is validated against."""
    return method_schema_paths(config)


def enabled_methods(config: dict) -> list[str]:
    return methods.enabled(config)


def method_seeds(method: str, seeds: list[int]) -> list[int]:
    """The seeds a method is trained with: all of them, or the first for a deterministic method."""
    return list(seeds) if methods.spec(method).seeded else list(seeds[:1])


def image_sizes(config: dict) -> list[int]:
    """Every resolution an image store must hold: each enabled method's."""
    return sorted({int(config["methods"][m]["image_size"]) for m in enabled_methods(config)})


def uses_gpu(method: str) -> bool:
    return methods.spec(method).gpu


@functools.lru_cache(maxsize=4096)
def _manifest_summary(path: str, mtime_ns: int) -> dict:
    with open(path) as fh:
        data = json.load(fh)
    return {
        "n_shards": data["n_shards"],
        "shard_digests": data["shard_digests"],
        # manifests written before data_digest existed: the shard digests stand in for it
        "data_digest": data.get("data_digest") or json_digest({"shards": data["shard_digests"]}),
        "n_files": data["n_files"],
    }


def manifest_summary(path: str | os.PathLike) -> dict:
    """Shard count, per-shard and whole-collection content digests of a manifest (cached by mtime)."""
    path = str(path)
    return _manifest_summary(path, os.stat(path).st_mtime_ns)


@functools.cache
def training_code_digest(method: str) -> str:
    """Digest of the package code a trained ``method`` depends on: a change retrains that method only."""
    own = (f"methods/{method}.py", f"methods/{method}.schema.yaml")
    return code_digest((*TRAINING_CODE, *own, *methods.spec(method).code))
