"""What the report reads: evaluation's ``metrics.json`` and ``gallery.h5``, the ledger's
``ledger.json``, and this environment's package versions.  Nothing else: every number on the
page was computed upstream (evaluation, ledger); the report renders it.

A missing or damaged input never stops the morning report: it is logged and shown as a problem
on the page, and the sections that need it say that they have nothing to show.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
from collections.abc import Mapping

from .. import __version__
from ..gallery import read_gallery
from .render import json_clean

log = logging.getLogger(__name__)

PACKAGES = ("torch", "torchvision", "h5py", "numpy", "scikit-learn", "scipy", "matplotlib", "jinja2", "snakemake")


def _read_json(path: str, what: str, problems: list[str]) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        log.warning("report: cannot read %s %s: %s", what, path, exc)
        problems.append(f"{what} not read ({path}): {exc}")
        return None


def read_inputs(metrics_path: str, gallery_path: str, ledger_path: str) -> dict:
    """``{"metrics", "gallery", "ledger", "problems"}``; an unreadable input is None plus a problem."""
    problems: list[str] = []
    metrics = _read_json(metrics_path, "evaluation (metrics.json)", problems)
    ledger = _read_json(ledger_path, "ledger (ledger.json)", problems)
    gallery = read_gallery(gallery_path)
    if gallery is None:
        problems.append(f"galleries not read ({gallery_path})")
    return {
        "metrics": metrics or {"methods": {}},
        "gallery": gallery,
        "ledger": ledger or {"batches": [], "not_processed": [], "job_times": []},
        "problems": problems,
    }


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
