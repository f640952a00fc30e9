"""What the report reads: evaluation's ``metrics.json`` and ``gallery.h5``, the ledger's
``ledger.json``, the ``thumbnails.json`` that summarize wrote beside the summaries of the batches
of fields the page shows in detail, and this environment's package versions.  Nothing else: every
number on the page was computed upstream (evaluation, ledger); the report renders it.

A missing or damaged input never stops the morning report: it is logged and shown as a problem
on the page, and the sections that need it say that they have nothing to show.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import __version__
from .. import paths as P
from ..gallery import read_gallery
from .plates import detailed_batches
from .render import json_clean

log = logging.getLogger(__name__)

THUMBNAILS_FILE_MAX = 64 * 2**20  # bytes of one thumbnails.json (384 wells × 5 JPEGs of ~3 kB: ~10 MB)
THUMB_URI_MAX = 100_000  # characters of one thumbnail's data URI (a 160×120 JPEG: ~4 kB)
THUMB_SIDE_MAX = 1024
_THUMB_URI = re.compile(r"data:image/(?:jpeg|png);base64,[A-Za-z0-9+/]+={0,2}")

PACKAGES = ("torch", "torchvision", "h5py", "numpy", "scikit-learn", "scipy", "matplotlib", "jinja2", "snakemake")


def _read_json(path: str, what: str, problems: list[str]) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        log.warning("report: cannot read %s %s: %s", what, path, exc)
        problems.append(f"{what} not read ({path}): {exc}")
        return None


def read_inputs(metrics_path: str, gallery_path: str, ledger_path: str, plates: int = 0) -> dict:
    """``{"metrics", "gallery", "ledger", "thumbnails", "thumbnail_files", "problems"}``; an unreadable input
    is None plus a problem.  ``thumbnails``: ``{batch: thumbnails or None}`` for the latest ``plates`` batches
    of fields (:func:`read_thumbnails`), ``thumbnail_files``: where each was looked for."""
    problems: list[str] = []
    metrics = _read_json(metrics_path, "evaluation (metrics.json)", problems)
    ledger = _read_json(ledger_path, "ledger (ledger.json)", problems)
    gallery = read_gallery(gallery_path)
    if gallery is None:
        problems.append(f"galleries not read ({gallery_path})")
    ledger = ledger or {"batches": [], "not_processed": [], "job_times": []}
    files = {b: str(thumbnails_path(ledger_path, b)) for b in detailed_batches(ledger, plates)}
    return {
        "metrics": metrics or {"methods": {}},
        "gallery": gallery,
        "ledger": ledger,
        "thumbnails": {b: read_thumbnails(path, b, problems) for b, path in files.items()},
        "thumbnail_files": files,
        "problems": problems,
    }


def thumbnails_path(ledger_path: str | os.PathLike, batch: str) -> Path:
    """:func:`wormflow.paths.thumbnails` of ``batch`` in the results folder that holds ``ledger_path``
    (the paths module's paths are relative to a run's working directory, whose ``results/`` holds both)."""
    return Path(ledger_path).parent / Path(P.thumbnails(batch)).relative_to(P.RESULTS)


def _thumb(value: object) -> tuple[str | None, bool]:
    """``(uri, rejected)``: a base64 JPEG or PNG data URI of at most :data:`THUMB_URI_MAX` characters, or None
    (``rejected`` when a value was there but is not one)."""
    if value is None:
        return None, False
    if isinstance(value, str) and len(value) <= THUMB_URI_MAX and _THUMB_URI.fullmatch(value):
        return value, False
    return None, True


def _thumb_size(value: object) -> tuple[int, int] | None:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    if ok and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= THUMB_SIDE_MAX for v in value):
        return int(value[0]), int(value[1])
    return None


def read_thumbnails(path: str | os.PathLike, batch: str, problems: list[str]) -> dict | None:
    """``{"size": (w, h) or None, "wells": {field id: {"composite": uri or None, "maps": {method: uri}}}}`` from a
    batch's ``thumbnails.json``; None plus a problem when it is missing, unreadable, larger than
    :data:`THUMBNAILS_FILE_MAX` or not shaped so.  Every image must be a base64 JPEG or PNG ``data:`` URI of at
    most :data:`THUMB_URI_MAX` characters: any other value is left out, counted in one problem line."""
    what = f"thumbnails of batch {batch}"
    try:
        size = os.stat(path).st_size
        if size > THUMBNAILS_FILE_MAX:
            raise ValueError(f"{size} bytes, more than the {THUMBNAILS_FILE_MAX} read")
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, Mapping) or not isinstance(data.get("wells"), Mapping):
            raise ValueError('no "wells" object')
    except (OSError, ValueError) as exc:
        log.warning("report: cannot read %s (%s): %s", what, path, exc)
        problems.append(f"{what} not read ({path}): {exc}")
        return None
    wells, rejected = {}, 0
    for well, entry in data["wells"].items():
        if not isinstance(entry, Mapping):
            rejected += 1
            continue
        composite, bad = _thumb(entry.get("composite"))
        rejected += bad
        maps = {}
        raw_maps = entry.get("maps")
        if isinstance(raw_maps, Mapping):
            for method, value in raw_maps.items():
                uri, bad = _thumb(value)
                rejected += bad
                if uri is not None:
                    maps[str(method)] = uri
        elif raw_maps is not None:
            rejected += 1
        wells[str(well)] = {"composite": composite, "maps": maps}
    if rejected:
        problems.append(
            f"{what} ({path}): {rejected} image(s) left out (not a base64 JPEG or PNG data: URI of at most {THUMB_URI_MAX} characters)"
        )
    return {"size": _thumb_size(data.get("size")), "wells": wells}


def package_versions() -> dict[str, str]:
    """Versions of Python, wormflow and the libraries the results depend on ('not installed' when absent)."""
    out = {"python": platform.python_version(), "wormflow": __version__}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def config_yaml(config: Mapping) -> str:
    """The run's configuration as YAML (key order kept)."""
    import yaml

    try:
        return yaml.safe_dump(json_clean(config), sort_keys=False, allow_unicode=True, default_flow_style=False)
    except yaml.YAMLError:
        return json.dumps(json_clean(config), indent=2, default=str, ensure_ascii=False)
