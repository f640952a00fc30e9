"""Rendering: the Jinja2 environment (autoescape on for every template), the display filters and
the JSON sidecar.

Safety: every value is autoescaped; the template marks nothing ``|safe`` (figures and thumbnails
are base64 ``data:`` URIs, which escaping leaves intact), so a hostile file name, batch name,
reason or config value can only ever appear as text.  Names are additionally shown with control
and bidirectional-override characters made visible (``\\u202e``), so they read as what they are.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .. import __version__

METRIC_KEYS = ("f1", "auroc", "average_precision", "precision", "recall")
METRIC_NAMES = {"f1": "F1", "precision": "Precision", "recall": "Recall", "auroc": "AUROC", "average_precision": "AP"}
PLATE_PAGE_ONLY = ("anchor", "labels", "figures", "rows", "shown", "off_plate", "thumb_size")  # images, page layout
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def default_templates_dir() -> Path:
    """The repository's top-level ``templates/`` folder."""
    return Path(__file__).resolve().parents[2] / "templates"


def visible(text: object) -> str:
    """``text`` with control, zero-width and bidi-override characters shown as ``\\uXXXX`` (display only)."""
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text))


def num(value: object) -> float | None:
    """A finite float, or ``None`` (for NaN, blanks, ``None`` and text that is not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def json_clean(obj: object) -> object:
    """A copy of ``obj`` that strict JSON accepts: NaN/inf → ``None``, numpy scalars and arrays → Python."""
    if isinstance(obj, Mapping):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def fmt(value: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or an en dash when missing."""
    v = num(value)
    return "–" if v is None else f"{v:.{digits}f}"


def fmt_ci(interval: object, digits: int = 3) -> str:
    """A 95 % interval as ``[lo, hi]``."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return ""
    return f"[{fmt(interval[0], digits)}, {fmt(interval[1], digits)}]"


def fmt_pct(value: object, digits: int = 1) -> str:
    """A share as a percentage (``0.647`` → ``64.7%``)."""
    v = num(value)
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def fmt_seconds(value: object) -> str:
    v = num(value)
    if v is None:
        return "–"
    if v < 120:
        return f"{v:.2f} s"
    return f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.2f} h"


def template_environment(templates_dir: str | os.PathLike | None = None):
    """A Jinja2 environment over ``templates_dir`` with autoescaping on for every template."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir or default_templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=fmt, ci=fmt_ci, pct=fmt_pct, seconds=fmt_seconds, visible=visible)
    env.globals.update(metric_names=METRIC_NAMES, metric_keys=METRIC_KEYS)
    return env


def render_html(context: dict, templates_dir: str | os.PathLike | None = None) -> str:
    return template_environment(templates_dir).get_template("report.html.j2").render(**context)


def sidecar(context: dict) -> dict:
    """The numbers of the page (no images): what ``report.json`` holds.  For the detailed batches of fields,
    ``plates`` has every field's numbers as the summary wrote them (with its plate position), also for the
    wells whose thumbnail rows the page leaves out."""
    galleries = [
        {
            **{k: g[k] for k in ("method", "label", "n_misses", "n_hits")},
            **{kind: [{k: e[k] for k in ("id", "label", "methods")} for e in g[kind]] for kind in ("misses", "hits")},
        }
        for g in context["galleries"]["galleries"]
    ]
    batches = [{k: v for k, v in r.items() if k != "batch_visible"} for r in context["batches"]]
    plates = [
        {
            **{k: v for k, v in b.items() if k not in PLATE_PAGE_ONLY},
            "wells": [{k: v for k, v in r.items() if k != "position"} | {"plate_position": r["position"]} for r in b["rows"]],
            "thumbnail_rows": len(b["shown"]),
        }
        for b in context["plates"]["batches"]
    ]
    return json_clean(
        {
            "title": context["title"],
            "generated_utc": context["generated_utc"],
            "generation_s": context["generation_s"],
            "package_version": __version__,
            "methods": context["methods"],
            "summary": context["summary"],
            "confusion_matrices": context["confusion"],
            "galleries": {"methods": galleries},
            "batches": batches,
            "retraining_pending": context["retraining_pending"],
            "plates": {"batches": plates, **{k: v for k, v in context["plates"].items() if k != "batches"}},
            "trends": {
                **{k: v for k, v in context["trends"].items() if k != "figure"},
                "fields": {k: v for k, v in context["field_trends"].items() if k != "figure"},
            },
            "quarantine": [{k: v for k, v in q.items() if k != "id_visible"} for q in context["quarantine"]],
            "provenance": context["provenance"],
        }
    )
