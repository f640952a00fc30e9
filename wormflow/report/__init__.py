"""The HTML report (``results/report.html``) and its JSON sidecar (``results/report.json``).

One self-contained page that imaging labs open every morning: every figure and image is an
inline ``data:`` URI (SVG plots, PNG thumbnails from :mod:`wormflow.plots`), the styles are one
``<style>`` block, there is no JavaScript, and a Content-Security-Policy ``<meta>`` forbids
loading anything from outside the file.  Sections: summary, confusion matrices, ROC and PR
curves, metrics against threshold, score histograms, galleries, batches, plates, trends,
quarantine, provenance.

Plates: for the latest ``report.plates`` batches of fields (raw microscope output, one field per
well; the summary's ``fields`` object), a plate map per method coloured by the estimated worm area
share, the per-method table, the methods' agreement and per-well thumbnails (at most
``report.max_well_thumbnails`` rows per batch, from the batch's ``thumbnails.json``); the trends
cover every batch of fields.

The report displays what evaluation (``eval/metrics.json``, ``eval/gallery.h5``) and the ledger
(``ledger.json``) wrote (:mod:`.read`); each section is a function from those to the template's
context (:mod:`.sections`); :mod:`.render` holds the autoescaping Jinja2 environment, the
filters and the sidecar.  ``report.json`` holds the numbers the page shows (full precision; the
page rounds), as strict JSON (NaN → ``null``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence

from .. import plots
from ..atomic import atomic_write_text
from ..store import utc_now
from . import plates as plates_mod
from . import sections
from .read import config_yaml, package_versions, read_inputs
from .render import json_clean, render_html, sidecar, visible

__all__ = ["build_context", "json_clean", "report_step", "visible"]

log = logging.getLogger(__name__)

SECTIONS = (
    ("summary", "Summary"),
    ("confusion", "Confusion matrices"),
    ("curves", "ROC and PR curves"),
    ("threshold", "Metrics against threshold"),
    ("histograms", "Score histograms"),
    ("galleries", "Galleries"),
    ("batches", "Batches"),
    ("plates", "Plates"),
    ("trends", "Trends"),
    ("quarantine", "Quarantine"),
    ("provenance", "Provenance"),
)
DEFAULT_PLATES = 3
DEFAULT_MAX_WELL_THUMBNAILS = 96


def build_context(inputs: dict, methods: Sequence[str], config: Mapping) -> dict:
    """Everything the template and the sidecar need, from the inputs :func:`read.read_inputs` returns."""
    metrics, ledger = inputs["metrics"], inputs["ledger"]
    blocks = metrics.get("methods", {})
    display = {m: b.get("display", {}) for m, b in blocks.items()}
    evaluated = [m for m in methods if m in blocks]
    learned = [m for m in evaluated if not display[m].get("baseline")]
    floors = [m for m in evaluated if display[m].get("baseline")]
    report_cfg = config.get("report", {})
    ks_max = float(config.get("drift", {}).get("ks_max", 0.3))
    batch_rows = sections.batches_section(ledger, evaluated)
    detail = (config.get("retention") or {}).get("report_detail_batches")
    shown_rows, older = sections.latest_batches(batch_rows, detail)
    plates = plates_mod.plates_section(
        ledger,
        methods,
        display,
        inputs.get("thumbnails", {}),
        inputs.get("thumbnail_files", {}),
        int(report_cfg.get("plates", DEFAULT_PLATES)),
        int(report_cfg.get("max_well_thumbnails", DEFAULT_MAX_WELL_THUMBNAILS)),
    )
    return {
        "title": str(report_cfg.get("title", "wormflow report")),
        "sections": SECTIONS,
        "section_no": {anchor: i for i, (anchor, _) in enumerate(SECTIONS, 1)},
        "methods": learned,
        "floors": floors,
        "missing_methods": [m for m in methods if m not in blocks],
        "problems": [*inputs["problems"], *ledger.get("problems", [])],
        "retraining_pending": ledger.get("retraining_pending", []),
        "summary": sections.summary_section(metrics, learned, floors, display),
        "confusion": sections.confusion_section(metrics, evaluated, display),
        "figures": sections.evaluation_figures(metrics, learned, evaluated, display),
        "galleries": sections.galleries_section(inputs["gallery"], learned, display),
        "batches": shown_rows,
        "batches_older": len(older),
        "batches_detail": detail,
        "batch_methods": evaluated,
        "agreement_pairs": sections.agreement_pairs(evaluated),
        "ks_max": ks_max,
        "trends": sections.trends_section(batch_rows, evaluated, ks_max, display),
        "plates": plates,
        "field_trends": plates_mod.field_trends(ledger, methods, display),
        "quarantine": sections.quarantine_section(ledger, metrics.get("test_quarantine", []), skip=set(older)),
        "quarantine_html_max": sections.QUARANTINE_HTML_MAX,
        "provenance": {
            "config_yaml": config_yaml(config),
            "versions": package_versions(),
            "models": [sections.model_provenance(m, blocks[m], display) for m in evaluated],
            "benchmarks": ledger.get("job_times", []),
            "metrics_generated_utc": metrics.get("generated_utc"),
            "metrics_package_version": metrics.get("package_version"),
        },
        "method_colour": lambda m, i=0: plots.method_colour(display, m, i),
        "colour_bar": plots.colour_bar_uri(),
        "class_colours": plots.CLASS_COLOURS,
    }


def report_step(
    *,
    metrics_path: str,
    gallery_path: str,
    ledger_path: str,
    methods: Sequence[str],
    config: Mapping,
    out_html: str,
    out_json: str,
    templates_dir: str | os.PathLike | None = None,
) -> dict:
    """Write ``report.html`` (self-contained) and ``report.json`` atomically; return the sidecar dict."""
    t0 = time.perf_counter()
    plates = int(config.get("report", {}).get("plates", DEFAULT_PLATES))
    context = build_context(read_inputs(metrics_path, gallery_path, ledger_path, plates), list(methods), config)
    context["generated_utc"] = utc_now()
    context["generation_s"] = round(time.perf_counter() - t0, 2)
    html = render_html(context, templates_dir)
    data = sidecar(context)
    atomic_write_text(out_json, json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False) + "\n")
    atomic_write_text(out_html, html)
    log.info("report: %s (%.0f kB) and %s in %.1f s", out_html, len(html.encode()) / 1e3, out_json, time.perf_counter() - t0)
    return data
