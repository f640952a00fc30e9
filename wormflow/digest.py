"""Content digests: of config sections, of the package code a model depends on, of files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def json_digest(value: object) -> str:
    """A stable 16-hex-digit digest of a JSON-serialisable value (dict keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_digest(modules: Iterable[str]) -> str:
    """Digest of package files (paths relative to ``wormflow/``): a change retrains the models that depend on them."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        h.update(name.encode())
        h.update((PACKAGE_DIR / name).read_bytes())
    return h.hexdigest()[:16]
