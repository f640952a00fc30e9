"""The HTML report (``results/report.html``) and its JSON sidecar (``results/report.json``).

One self-contained page that imaging labs open every morning: every figure
and image is an inline ``data:`` URI (SVG plots, PNG thumbnails from
:mod:`wormflow.plots`), the styles are one ``<style>`` block, there is no
JavaScript, and a Content-Security-Policy ``<meta>`` forbids loading
anything from outside the file.  Sections: summary, confusion matrices, ROC
and PR curves, metrics against threshold, score histograms, galleries,
batches, trends, quarantine, provenance.

Safety: the page is rendered by Jinja2 with autoescaping on for every
value; the template marks nothing ``|safe`` (figures and thumbnails are
base64 ``data:`` URIs, which escaping leaves intact), so a hostile file
name, batch name, reason or config value can only ever appear as text.
Names are additionally shown with control and bidirectional-override
characters made visible (``\\u202e``), so they read as what they are.

``report.json`` holds the numbers the page shows (full precision; the page
rounds), as strict JSON (NaN → ``null``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from . import __version__, plots
from .atomic import atomic_write_text
from .store import IncompleteFileError, open_complete, read_strings

log = logging.getLogger(__name__)

BASELINE = "dark_pixels"
METRIC_KEYS = ("f1", "auroc", "average_precision", "precision", "recall")
METRIC_NAMES = {"f1": "F1", "precision": "Precision", "recall": "Recall", "auroc": "AUROC", "average_precision": "AP"}
METHOD_LABELS = {
    "vae": "VAE + colour heuristic",
    "gan": "DCGAN + f-AnoGAN encoder",
    "resnet50": "ResNet-50 + focal loss",
    BASELINE: "Dark-pixel share (floor)",
}
CLASS_NAMES = ("no_wormed", "wormed")
PACKAGES = ("torch", "torchvision", "h5py", "numpy", "scikit-learn", "scipy", "matplotlib", "jinja2", "snakemake")
QUARANTINE_HTML_MAX = 5000
SECTIONS = (
    ("summary", "Summary"),
    ("confusion", "Confusion matrices"),
    ("curves", "ROC and PR curves"),
    ("threshold", "Metrics against threshold"),
    ("histograms", "Score histograms"),
    ("galleries", "Galleries"),
    ("batches", "Batches"),
    ("trends", "Trends"),
    ("quarantine", "Quarantine"),
    ("provenance", "Provenance"),
)
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def default_templates_dir() -> Path:
    """The repository's top-level ``templates/`` folder."""
    return Path(__file__).resolve().parents[1] / "templates"


# --------------------------------------------------------------------------- small helpers


def visible(text: object) -> str:
    """``text`` with control, zero-width and bidi-override characters shown as ``\\uXXXX`` (display only)."""
    s = str(text)
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", s)


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


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- template filters


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


# --------------------------------------------------------------------------- metrics and summary


def load_metrics(path: str | os.PathLike) -> dict:
    """``metrics.json`` as written by :func:`wormflow.evaluate.evaluate_step` (NaN allowed)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def report_methods(metrics: dict, methods: Sequence[str]) -> list[str]:
    """The enabled methods that metrics.json evaluated, in workflow order."""
    return [m for m in methods if m in metrics.get("methods", {})]


def summary_row(name: str, block: dict, published: Mapping[str, float]) -> dict:
    """One row of the summary table: metrics, intervals, threshold, seeds and the published F1."""
    seed_summary = block.get("seed_summary") or {}
    return {
        "method": name,
        "label": method_label(name),
        "baseline": bool(block.get("baseline", name == BASELINE)),
        "n_test": block.get("n_test"),
        "n_wormed": block.get("n_wormed"),
        "metrics": {k: block.get("metrics", {}).get(k) for k in (*METRIC_KEYS, "accuracy")},
        "intervals": {k: block.get("intervals", {}).get(k) for k in (*METRIC_KEYS, "accuracy")},
        "threshold": block.get("threshold"),
        "threshold_rule": block.get("threshold_rule", ""),
        "dev_f1": block.get("dev_f1"),
        "seeds": list(block.get("seeds", [])),
        "seed_summary": {k: seed_summary[k] for k in METRIC_KEYS if k in seed_summary} if len(block.get("seeds", [])) > 1 else {},
        "published_f1": block.get("published_f1", published.get(name)),
        "best": False,
        "below_floor": False,
    }


def summary_section(metrics: dict, methods: Sequence[str], published: Mapping[str, float]) -> dict:
    """Methods side by side plus the baseline (the floor), best F1 and methods below the floor marked."""
    rows = [summary_row(m, metrics["methods"][m], published) for m in methods]
    baseline = metrics["methods"].get(BASELINE)
    floor = summary_row(BASELINE, baseline, published) if baseline else None
    f1s = [num(r["metrics"]["f1"]) for r in rows]
    best = max((f for f in f1s if f is not None), default=None)
    floor_f1 = num(floor["metrics"]["f1"]) if floor else None
    for r, f in zip(rows, f1s):
        r["best"] = f is not None and f == best
        r["below_floor"] = f is not None and floor_f1 is not None and f < floor_f1
    notes = {k: v for k, v in published.items() if k not in methods}
    n_test = metrics.get("n_test") or (rows[0]["n_test"] if rows else floor["n_test"] if floor else None)
    n_wormed = next((r["n_wormed"] for r in [*rows, floor] if r and r.get("n_wormed") is not None), None)
    return {
        "rows": rows,
        "baseline": floor,
        "n_test": n_test,
        "n_wormed": n_wormed,
        "n_boot": metrics.get("n_boot"),
        "published_f1": dict(published),
        "published_notes": notes,
        "evaluated_utc": metrics.get("generated_utc"),
    }


def confusion_section(metrics: dict, names: Sequence[str]) -> list[dict]:
    """Per method: the 2×2 confusion matrix at the stored threshold, with row shares."""
    out = []
    for name in names:
        block = metrics["methods"][name]
        cm = np.asarray(block.get("confusion_matrix", [[0, 0], [0, 0]]), dtype=np.int64).reshape(2, 2)
        totals = cm.sum(axis=1)
        shares = [[(cm[i, j] / totals[i]) if totals[i] else None for j in range(2)] for i in range(2)]
        out.append(
            {
                "method": name,
                "label": method_label(name),
                "threshold": block.get("threshold"),
                "matrix": cm.tolist(),
                "shares": shares,
                "tn": int(cm[0, 0]),
                "fp": int(cm[0, 1]),
                "fn": int(cm[1, 0]),
                "tp": int(cm[1, 1]),
            }
        )
    return out


def evaluation_figures(metrics: dict, methods: Sequence[str], names: Sequence[str]) -> dict:
    """ROC/PR (all methods and the baseline), threshold sweeps and histograms (methods) as data URIs."""
    blocks = metrics["methods"]
    labels = {n: method_label(n) for n in names}
    out = {"roc_pr": None, "threshold": None, "histograms": None}
    curves = {n: blocks[n].get("curves", {}) for n in names}
    if any("roc" in c or "pr" in c for c in curves.values()):
        aurocs = {n: num(blocks[n]["metrics"].get("auroc")) for n in names}
        aps = {n: num(blocks[n]["metrics"].get("average_precision")) for n in names}
        out["roc_pr"] = plots.roc_pr_figure(curves, aurocs, aps, labels)
    thresholds = {m: num(blocks[m].get("threshold")) for m in methods}
    sweeps = {m: blocks[m]["curves"]["threshold_sweep"] for m in methods if "threshold_sweep" in blocks[m].get("curves", {})}
    if sweeps:
        out["threshold"] = plots.threshold_sweep_figure(sweeps, thresholds, labels)
    hists = {m: blocks[m]["histogram"] for m in methods if "histogram" in blocks[m]}
    if hists:
        out["histograms"] = plots.histogram_figure(hists, thresholds, labels)
    return out


# --------------------------------------------------------------------------- test scores and galleries


@dataclass
class ScoreFile:
    """One gathered ``scores.h5`` (test split or batch), method columns aligned to ``images/ids``."""

    path: str
    ids: list[str]
    labels: np.ndarray
    attrs: dict
    score: dict[str, np.ndarray] = field(default_factory=dict)
    pred: dict[str, np.ndarray] = field(default_factory=dict)
    threshold: dict[str, float | None] = field(default_factory=dict)
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # per method: row in its group of each image, -1 if absent
    quarantine: list[dict] = field(default_factory=list)


def _aligned(values: np.ndarray, rows: np.ndarray, fill: float) -> np.ndarray:
    out = np.full(len(rows), fill, dtype=np.float64)
    ok = rows >= 0
    if ok.any() and len(values):
        out[ok] = values[rows[ok]]
    return out


def read_score_file(path: str | os.PathLike, methods: Sequence[str]) -> ScoreFile:
    """Read ids, labels, per-method scores/predictions and the quarantine table of a gathered file."""
    with open_complete(path, "wormflow-batch") as f:
        ids = read_strings(f["images/ids"]) if "images/ids" in f else []
        labels = f["images/labels"][()].astype(np.int64) if "images/labels" in f else np.full(len(ids), -1)
        sf = ScoreFile(str(path), ids, labels, {k: _attr(v) for k, v in f.attrs.items()})
        sf.quarantine = _read_quarantine(f)
        index = {i: k for k, i in enumerate(ids)}
        for m in methods:
            if m not in f or "ids" not in f[m]:
                continue
            grp = f[m]
            rows = np.full(len(ids), -1, dtype=np.int64)
            for r, i in enumerate(read_strings(grp["ids"])):
                if i in index:
                    rows[index[i]] = r
            sf.rows[m] = rows
            sf.threshold[m] = num(grp.attrs.get("threshold"))
            if "score" in grp:
                sf.score[m] = _aligned(grp["score"][()].astype(np.float64), rows, np.nan)
            if "pred" in grp:
                sf.pred[m] = _aligned(grp["pred"][()].astype(np.float64), rows, np.nan)
            elif m in sf.score and sf.threshold[m] is not None:
                sf.pred[m] = np.where(np.isfinite(sf.score[m]), (sf.score[m] >= sf.threshold[m]).astype(float), np.nan)
    return sf


def _attr(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_attr(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_quarantine(f) -> list[dict]:
    if "quarantine" not in f or "ids" not in f["quarantine"]:
        return []
    q = f["quarantine"]
    ids = read_strings(q["ids"])
    reasons = read_strings(q["reasons"]) if "reasons" in q else [""] * len(ids)
    stages = read_strings(q["stage"]) if "stage" in q else [""] * len(ids)
    return [{"id": i, "reason": r, "stage": s} for i, r, s in zip(ids, reasons, stages)]


def _interleave(groups: Sequence[list[int]]) -> list[int]:
    out = []
    for k in range(max((len(g) for g in groups), default=0)):
        out += [g[k] for g in groups if k < len(g)]
    return out


def select_gallery(sf: ScoreFile, method: str, threshold: float | None, size: int) -> dict:
    """Row indices of misses (most wrong first) and hits (most confident first, classes interleaved)."""
    score, pred = sf.score.get(method), sf.pred.get(method)
    if score is None or pred is None or size <= 0:
        return {"misses": [], "hits": [], "n_misses": 0, "n_hits": 0}
    thr = threshold if threshold is not None else sf.threshold.get(method)
    margin = np.abs(score - thr) if thr is not None else np.abs(score - np.nanmedian(score))
    valid = np.isfinite(score) & np.isfinite(pred) & np.isin(sf.labels, (0, 1))
    wrong = valid & (pred != sf.labels)
    right = valid & (pred == sf.labels)
    misses = sorted(np.flatnonzero(wrong).tolist(), key=lambda i: (-margin[i], sf.ids[i]))
    by_class = [sorted(np.flatnonzero(right & (sf.labels == c)).tolist(), key=lambda i: (-margin[i], sf.ids[i])) for c in (1, 0)]
    hits = _interleave(by_class)
    return {"misses": misses[:size], "hits": hits[:size], "n_misses": int(wrong.sum()), "n_hits": int(right.sum())}


def _largest_size(f) -> str | None:
    sizes = [k for k in f["images"] if k.isdigit()] if "images" in f else []
    return max(sizes, key=int) if sizes else None


def read_originals(store_paths: Sequence[str], wanted: set[str]) -> dict[str, np.ndarray]:
    """The wanted images from the test image stores, at each store's largest stored size."""
    out: dict[str, np.ndarray] = {}
    for path in store_paths:
        try:
            with open_complete(path, "wormflow-images") as f:
                size = _largest_size(f)
                if size is None:
                    continue
                ids = read_strings(f["ids"])
                rows = sorted(k for k, i in enumerate(ids) if i in wanted and i not in out)
                if rows:
                    block = f["images"][size][rows]
                    out.update({ids[r]: block[k] for k, r in enumerate(rows)})
        except (IncompleteFileError, OSError, KeyError) as exc:
            log.warning("report: cannot read test image store %s: %s", path, exc)
    return out


def read_method_rows(path: str, method: str, names: Sequence[str], rows: Mapping[str, int]) -> dict[str, dict[str, np.ndarray]]:
    """``{dataset: {id: array}}`` for the wanted rows of ``<method>/<dataset>`` in a gathered file."""
    out: dict[str, dict[str, np.ndarray]] = {}
    wanted = sorted((r, i) for i, r in rows.items() if r >= 0)
    if not wanted:
        return out
    with open_complete(path, "wormflow-batch") as f:
        if method not in f:
            return out
        for name in names:
            if name in f[method] and f[method][name].ndim >= 3:
                block = f[method][name][[r for r, _ in wanted]]
                out[name] = {i: block[k] for k, (_, i) in enumerate(wanted)}
    return out


GALLERY_COLUMNS = (
    ("original", "Original"),
    ("vae_recon", "VAE reconstruction"),
    ("gan_recon", "GAN reconstruction"),
    ("vae_error", "VAE error map"),
    ("mask", "Colour mask"),
)


def gallery_thumbs(sf: ScoreFile, store_paths: Sequence[str], ids: set[str]) -> tuple[dict[str, dict[str, str]], str]:
    """Thumbnails per image id and column (``GALLERY_COLUMNS``) and which method's colour mask is shown."""
    originals = read_originals(store_paths, ids)
    index = {i: k for k, i in enumerate(sf.ids)}
    per_method = {}
    for m, names in (("vae", ("recon", "error_map", "colour_mask")), ("gan", ("recon", "colour_mask"))):
        if m in sf.rows:
            rows = {i: int(sf.rows[m][index[i]]) for i in ids if i in index}
            per_method[m] = read_method_rows(sf.path, m, names, rows)
    mask_from = (
        "vae" if "colour_mask" in per_method.get("vae", {}) else "gan" if "colour_mask" in per_method.get("gan", {}) else ""
    )
    thumbs: dict[str, dict[str, str]] = {}
    for i in ids:
        t = {}
        if i in originals:
            t["original"] = plots.rgb_thumb(originals[i])
        sources = (
            ("vae_recon", "vae", "recon", plots.rgb_thumb),
            ("gan_recon", "gan", "recon", plots.rgb_thumb),
            ("vae_error", "vae", "error_map", plots.error_map_thumb),
            ("mask", mask_from, "colour_mask", plots.mask_thumb),
        )
        for col, m, name, render in sources:
            arr = per_method.get(m, {}).get(name, {}).get(i)
            if arr is not None:
                t[col] = render(arr)
        thumbs[i] = t
    return thumbs, mask_from


def gallery_entry(sf: ScoreFile, row: int, methods: Sequence[str], thresholds: Mapping[str, float | None]) -> dict:
    """Id, true label and every method's score and prediction for one test image."""
    label = int(sf.labels[row])
    per = []
    for m in methods:
        s = num(sf.score[m][row]) if m in sf.score else None
        p = num(sf.pred[m][row]) if m in sf.pred else None
        per.append(
            {
                "method": m,
                "label": method_label(m),
                "score": s,
                "threshold": thresholds.get(m),
                "pred": None if p is None else int(p),
                "pred_name": "–" if p is None else CLASS_NAMES[int(p)],
                "correct": None if p is None or label not in (0, 1) else int(p) == label,
            }
        )
    return {
        "id": sf.ids[row],
        "id_visible": visible(sf.ids[row]),
        "label": label,
        "label_name": CLASS_NAMES[label] if label in (0, 1) else "unlabeled",
        "methods": per,
    }


def galleries_section(
    sf: ScoreFile | None, store_paths: Sequence[str], methods: Sequence[str], thresholds: Mapping[str, float | None], size: int
) -> dict:
    """Per method: up to ``size`` misses and hits of the test split, each row with its thumbnails."""
    if sf is None:
        return {"galleries": [], "mask_from": "", "columns": GALLERY_COLUMNS}
    picks = {m: select_gallery(sf, m, thresholds.get(m), size) for m in methods}
    wanted = {sf.ids[r] for p in picks.values() for r in (*p["misses"], *p["hits"])}
    thumbs, mask_from = gallery_thumbs(sf, store_paths, wanted)
    scored = [m for m in methods if m in sf.score]
    galleries = []
    for m in methods:
        p = picks[m]
        entries = {}
        for kind in ("misses", "hits"):
            entries[kind] = []
            for r in p[kind]:
                e = gallery_entry(sf, r, scored, thresholds)
                e["thumbs"] = thumbs.get(sf.ids[r], {})
                entries[kind].append(e)
        galleries.append(
            {
                "method": m,
                "label": method_label(m),
                "n_misses": p["n_misses"],
                "n_hits": p["n_hits"],
                "scored": m in sf.score,
                **entries,
            }
        )
    return {"galleries": galleries, "mask_from": mask_from, "columns": GALLERY_COLUMNS}


# --------------------------------------------------------------------------- batches


def read_ledger_rows(path: str | os.PathLike) -> dict[str, dict]:
    """``batches.tsv`` rows by batch name (empty when the file is missing)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return {r.get("batch", ""): r for r in csv.DictReader(fh, delimiter="\t")}
    except OSError as exc:
        log.warning("report: cannot read the ledger %s: %s", path, exc)
        return {}


def pair_key(a: str, b: str) -> str:
    """The name of a method pair in the agreement columns (``vae-gan``)."""
    return f"{a}-{b}"


def agreement(preds: Mapping[str, np.ndarray]) -> dict:
    """Share of images on which all methods agree, and every pair's agreement (images all methods scored)."""
    names = list(preds)
    if len(names) < 2:
        return {"all": None, "pairs": {}, "n": 0}
    stack = np.vstack([np.asarray(preds[m], dtype=np.float64) for m in names])
    ok = np.isfinite(stack).all(axis=0)
    n = int(ok.sum())
    if n == 0:
        return {"all": None, "pairs": {pair_key(a, b): None for a, b in combinations(names, 2)}, "n": 0}
    s = stack[:, ok]
    pairs = {pair_key(a, b): float((s[i] == s[j]).mean()) for (i, a), (j, b) in combinations(enumerate(names), 2)}
    return {"all": float((s == s[0]).all(axis=0).mean()), "pairs": pairs, "n": n}


def ks_statistic(scores: np.ndarray, dev: Sequence[float] | None) -> float | None:
    """Two-sample KS statistic of a batch's scores against the dev split's (fallback when the ledger lacks it)."""
    scores = scores[np.isfinite(scores)]
    if dev is None or len(dev) == 0 or len(scores) == 0:
        return None
    from scipy.stats import ks_2samp

    return float(ks_2samp(scores, np.asarray(dev, dtype=np.float64)).statistic)


def batch_row(
    name: str, path: str, ledger: Mapping[str, str], methods: Sequence[str], ks_max: float, dev_scores: Mapping[str, list]
) -> tuple[dict, ScoreFile | None]:
    """One batch: counts, flagged share, agreement and drift per method, and its status."""
    row: dict = {"batch": name, "batch_visible": visible(name), "rejected": False, "error": ""}
    sf = None
    try:
        sf = read_score_file(path, methods)
    except (IncompleteFileError, OSError, KeyError) as exc:
        row["error"] = str(exc)
    attrs = sf.attrs if sf else {}
    row["n_files"] = _int(attrs.get("n_files"), ledger.get("n_files"))
    row["n_scored"] = _int(attrs.get("n_scored"), ledger.get("n_scored"), len(sf.ids) if sf else None)
    row["n_quarantined"] = _int(attrs.get("n_quarantined"), ledger.get("n_quarantined"), len(sf.quarantine) if sf else None)
    row["flagged"], row["ks"], row["drift"] = {}, {}, {}
    for m in methods:
        pred = sf.pred.get(m) if sf else None
        finite = pred[np.isfinite(pred)] if pred is not None else np.zeros(0)
        row["flagged"][m] = float(finite.mean()) if len(finite) else num(ledger.get(f"{m}_flagged_share"))
        ks = num(ledger.get(f"{m}_ks"))
        if ks is None and sf is not None and m in sf.score:
            ks = ks_statistic(sf.score[m], dev_scores.get(m))
        row["ks"][m] = ks
        row["drift"][m] = ks is not None and ks > ks_max
    row["drift_any"] = any(row["drift"].values())
    row["agreement"] = agreement({m: sf.pred[m] for m in methods if sf and m in sf.pred})
    row["processing_s"] = num(ledger.get("processing_s"))
    row["gathered_utc"] = ledger.get("gathered_utc") or attrs.get("created_utc", "")
    row["status"] = _batch_status(row, ledger)
    return row, sf


def _int(*candidates: object) -> int | None:
    for c in candidates:
        v = num(c)
        if v is not None:
            return int(v)
    return None


def _batch_status(row: dict, ledger: Mapping[str, str]) -> str:
    if row["error"]:
        return "unreadable scores file"
    if row["n_scored"] == 0:
        return "empty" if not row["n_files"] else "nothing scorable"
    return ledger.get("status") or "ok"


def batches_section(
    batches: Sequence[str],
    paths: Sequence[str],
    rejected: Sequence[str],
    ledger_path: str,
    methods: Sequence[str],
    ks_max: float,
    dev_scores: Mapping[str, list],
) -> tuple[list[dict], dict[str, ScoreFile]]:
    """Rows for the scored batches (sorted by name = date) and the rejected directory names."""
    ledger = read_ledger_rows(ledger_path)
    rows, files = [], {}
    for name, path in sorted(zip(batches, paths), key=lambda t: t[0]):
        row, sf = batch_row(name, path, ledger.get(name, {}), methods, ks_max, dev_scores)
        rows.append(row)
        if sf is not None:
            files[name] = sf
    for name in sorted(rejected):
        status = ledger.get(name, {}).get("status") or "rejected: unusable directory name"
        rows.append(
            {
                "batch": name,
                "batch_visible": visible(name),
                "rejected": True,
                "status": status,
                "flagged": {},
                "ks": {},
                "drift": {},
            }
        )
    return rows, files


def trends_section(rows: Sequence[dict], methods: Sequence[str], ks_max: float) -> dict:
    """Flagged share and KS per method across the (non-rejected) batches, sorted by name, and the figure."""
    scored = sorted((r for r in rows if not r.get("rejected")), key=lambda r: r["batch"])
    names = [r["batch"] for r in scored]
    flagged = {m: [r["flagged"].get(m) for r in scored] for m in methods}
    ks = {m: [r["ks"].get(m) for r in scored] for m in methods}
    beyond = [r["batch"] for r in scored if r.get("drift_any")]
    figure = plots.trend_figure(names, flagged, ks, ks_max, {m: method_label(m) for m in methods}) if names and methods else None
    return {"batches": names, "flagged": flagged, "ks": ks, "ks_max": ks_max, "beyond": beyond, "figure": figure}


def quarantine_section(test: ScoreFile | None, files: Mapping[str, ScoreFile]) -> list[dict]:
    """Every quarantined file of every batch (and of the test split), with its stage and reason."""
    out = []
    sources: list[tuple[str, ScoreFile]] = sorted(files.items())
    if test is not None:
        sources.append(("test split", test))
    for coll, sf in sources:
        for q in sf.quarantine:
            out.append(
                {"collection": coll, "id": q["id"], "id_visible": visible(q["id"]), **{k: q[k] for k in ("stage", "reason")}}
            )
    return out


# --------------------------------------------------------------------------- provenance


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


def load_models(methods: Sequence[str], model_paths: Sequence[str]) -> tuple[dict[str, dict], list[str]]:
    """Each method's model artifact (safe loading), matched by the artifact's own ``method``, and the problems met.

    A missing dependency or a damaged artifact must not stop the morning
    report: the problem is logged and shown, and provenance falls back to
    metrics.json (artifacts that cannot be read are still hashed).
    """
    out: dict[str, dict] = {}
    if len(model_paths) == len(methods):  # the workflow passes one model per method, in order
        out = {m: {"path": str(p)} for m, p in zip(methods, model_paths)}
    try:
        from .artifact import load_artifact
    except ImportError as exc:
        log.warning("report: model artifacts not read: %s", exc)
        return out, [f"model artifacts not read: {exc}"]
    problems = []
    for path in model_paths:
        try:
            art = load_artifact(path)
        except Exception as exc:  # any unreadable artifact is reported, not fatal
            log.warning("report: cannot load model %s: %s", path, exc)
            problems.append(f"{path}: {exc}")
            continue
        m = art.get("method")
        if m in methods:
            out[m] = {"path": str(path), **{k: v for k, v in art.items() if k not in ("state_dict", "dev_labels")}}
    return out, problems


def model_provenance(method: str, block: dict, art: dict | None) -> dict:
    """Checkpoint hash (checked against the file), initialisation, seeds, epochs, times, device, rule, hashes."""
    from .inventory import sha256_file

    art = art or {}
    file_sha = None
    if art.get("path") and os.path.isfile(art["path"]):
        file_sha = sha256_file(art["path"])
    recorded = block.get("checkpoint_sha256")
    return {
        "method": method,
        "label": method_label(method),
        "checkpoint": art.get("path", ""),
        "checkpoint_sha256": recorded or file_sha,
        "checkpoint_matches": None if not (recorded and file_sha) else recorded == file_sha,
        "weights_init": block.get("weights_init", art.get("weights_init")),
        "seeds": block.get("seeds") or ([art["seed"]] if "seed" in art else []),
        "epochs_run": block.get("epochs_run", art.get("epochs_run")),
        "best_epoch": art.get("best_epoch"),
        "stopped_early": art.get("stopped_early"),
        "train_time_s": block.get("train_time_s", art.get("train_time_s")),
        "device": block.get("device", art.get("device")),
        "threshold": block.get("threshold", art.get("threshold")),
        "threshold_rule": block.get("threshold_rule", art.get("threshold_rule")),
        "config_hash": block.get("config_hash", art.get("config_hash")),
        "trained_utc": art.get("trained_utc"),
        "n_train": art.get("n_train"),
        "n_dev": art.get("n_dev"),
        "package_version": art.get("package_version"),
    }


def _benchmark_seconds(path: Path) -> float | None:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    return num(rows[-1].get("s")) if rows else None


_SCORE_FILE = re.compile(r"^(\d+)\.(.+)\.seed(\d+)\.tsv$")
_TRAIN_FILE = re.compile(r"^seed(\d+)\.tsv$")


def benchmark_records(root: str | os.PathLike) -> list[dict]:
    """Every benchmark file under ``root``: stage, collection, method, seed and seconds."""
    root = Path(root)
    out = []
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        rel = path.relative_to(root).parts
        stage, rest = rel[0], rel[1:]
        rec = {"stage": stage, "collection": "", "method": "", "seed": None, "s": _benchmark_seconds(path)}
        if stage == "score_shard" and len(rest) >= 2 and (m := _SCORE_FILE.match(rest[-1])):
            rec.update(collection="/".join(rest[:-1]), method=m.group(2), seed=int(m.group(3)))
        elif stage == "decode_shard" and len(rest) >= 2:
            rec["collection"] = "/".join(rest[:-1])
        elif stage == "train" and len(rest) == 2:
            seed = _TRAIN_FILE.match(rest[1])
            rec.update(method=rest[0], seed=int(seed.group(1)) if seed else None)
        elif stage == "gather":
            rec["collection"] = "/".join(rest)[: -len(".tsv")]
        if rec["s"] is not None:
            out.append(rec)
    return out


def benchmark_summary(records: Sequence[dict], n_images: Mapping[str, int]) -> list[dict]:
    """Per stage and method: files, median / max / total seconds, and images/s over collections of known size."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["stage"], r["method"]), []).append(r)
    order = {"train": 0, "decode_shard": 1, "score_shard": 2, "gather": 3}
    out = []
    for (stage, method), recs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][0], kv[0][1])):
        secs = [r["s"] for r in recs]
        out.append(
            {
                "stage": stage,
                "method": method,
                "n_files": len(recs),
                "median_s": statistics.median(secs),
                "max_s": max(secs),
                "total_s": sum(secs),
                "images_per_s": _images_per_second(recs, n_images) if stage != "train" else None,
            }
        )
    return out


def _images_per_second(recs: Sequence[dict], n_images: Mapping[str, int]) -> float | None:
    """Images over seconds, counting each (collection, seed) once and only collections of known size."""
    seconds, images, seen = 0.0, 0, set()
    for r in recs:
        n = n_images.get(r["collection"])
        if n is None:
            continue
        seconds += r["s"]
        key = (r["collection"], r["seed"])
        if key not in seen:
            seen.add(key)
            images += n
    return images / seconds if seconds > 0 and images else None


def provenance_section(
    config: Mapping,
    metrics: dict,
    methods: Sequence[str],
    models: Mapping[str, dict],
    benchmarks_root: str,
    n_images: Mapping[str, int],
) -> dict:
    """Configuration, versions, per-method model provenance and the benchmark summary."""
    return {
        "config_yaml": config_yaml(config),
        "versions": package_versions(),
        "models": [model_provenance(m, metrics["methods"].get(m, {}), models.get(m)) for m in methods],
        "benchmarks": benchmark_summary(benchmark_records(benchmarks_root), n_images),
        "metrics_generated_utc": metrics.get("generated_utc"),
        "metrics_package_version": metrics.get("package_version"),
    }


# --------------------------------------------------------------------------- rendering


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
    env.globals.update(method_colour=plots.method_colour, metric_names=METRIC_NAMES, metric_keys=METRIC_KEYS)
    return env


def render_html(context: dict, templates_dir: str | os.PathLike | None = None) -> str:
    return template_environment(templates_dir).get_template("report.html.j2").render(**context)


def sidecar(context: dict) -> dict:
    """The numbers of the page (no images): what ``report.json`` holds."""
    galleries = [
        {
            **{k: g[k] for k in ("method", "label", "n_misses", "n_hits")},
            **{kind: [{k: e[k] for k in ("id", "label", "methods")} for e in g[kind]] for kind in ("misses", "hits")},
        }
        for g in context["galleries"]["galleries"]
    ]
    batches = [{k: v for k, v in r.items() if k != "batch_visible"} for r in context["batches"]]
    return json_clean(
        {
            "title": context["title"],
            "generated_utc": context["generated_utc"],
            "generation_s": context["generation_s"],
            "package_version": __version__,
            "methods": context["methods"],
            "summary": context["summary"],
            "confusion_matrices": context["confusion"],
            "galleries": {"mask_from": context["galleries"]["mask_from"], "methods": galleries},
            "batches": batches,
            "trends": {k: v for k, v in context["trends"].items() if k != "figure"},
            "quarantine": [{k: v for k, v in q.items() if k != "id_visible"} for q in context["quarantine"]],
            "provenance": context["provenance"],
        }
    )


def build_context(
    *,
    metrics_path: str,
    ledger_path: str,
    test_scores_path: str,
    test_store_paths: Sequence[str],
    batch_scores_paths: Sequence[str],
    batches: Sequence[str],
    rejected_batches: Sequence[str],
    model_paths: Sequence[str],
    methods: Sequence[str],
    config: Mapping,
    benchmarks_root: str,
) -> dict:
    """Everything the template and the sidecar need."""
    metrics = load_metrics(metrics_path)
    present = report_methods(metrics, methods)
    missing = [m for m in methods if m not in present]
    names = [*present, *([BASELINE] if BASELINE in metrics.get("methods", {}) else [])]
    report_cfg = config.get("report", {})
    published = report_cfg.get("published_f1", metrics.get("published_f1", {})) or {}
    ks_max = float(config.get("drift", {}).get("ks_max", 0.3))
    models, model_problems = load_models(methods, model_paths)
    thresholds = {m: num(metrics["methods"][m].get("threshold")) for m in present}
    test = _read_test(test_scores_path, methods)
    batch_rows, batch_files = batches_section(
        batches,
        batch_scores_paths,
        rejected_batches,
        ledger_path,
        methods,
        ks_max,
        {m: a.get("dev_scores") for m, a in models.items()},
    )
    n_images = {f"batches/{r['batch']}": r["n_scored"] for r in batch_rows if r.get("n_scored") is not None}
    if test is not None:
        n_images["labeled/test"] = len(test.ids)
    return {
        "title": str(report_cfg.get("title", "wormflow report")),
        "sections": SECTIONS,
        "methods": list(present),
        "missing_methods": missing,
        "summary": summary_section(metrics, present, published),
        "confusion": confusion_section(metrics, names),
        "figures": evaluation_figures(metrics, present, names),
        "galleries": galleries_section(test, test_store_paths, present, thresholds, int(report_cfg.get("gallery_size", 8))),
        "batches": batch_rows,
        "batch_methods": list(methods),
        "agreement_pairs": [pair_key(a, b) for a, b in combinations(methods, 2)],
        "ks_max": ks_max,
        "trends": trends_section(batch_rows, methods, ks_max),
        "quarantine": quarantine_section(test, batch_files),
        "quarantine_html_max": QUARANTINE_HTML_MAX,
        "provenance": {
            **provenance_section(config, metrics, methods, models, benchmarks_root, n_images),
            "model_problems": model_problems,
        },
        "colour_bar": plots.colour_bar_uri(),
        "class_colours": plots.CLASS_COLOURS,
    }


def _read_test(path: str, methods: Sequence[str]) -> ScoreFile | None:
    try:
        return read_score_file(path, methods)
    except (IncompleteFileError, OSError, KeyError) as exc:
        log.warning("report: cannot read the test scores %s: %s", path, exc)
        return None


def report_step(
    *,
    metrics_path: str,
    ledger_path: str,
    test_scores_path: str,
    test_store_paths: Sequence[str],
    batch_scores_paths: Sequence[str],
    batches: Sequence[str],
    rejected_batches: Sequence[str],
    model_paths: Sequence[str],
    methods: Sequence[str],
    config: Mapping,
    benchmarks_root: str,
    out_html: str,
    out_json: str,
    templates_dir: str | os.PathLike | None = None,
) -> dict:
    """Write ``report.html`` (self-contained) and ``report.json`` atomically; return the sidecar dict."""
    t0 = time.perf_counter()
    if len(batches) != len(batch_scores_paths):
        raise ValueError(f"{len(batches)} batch names but {len(batch_scores_paths)} batch score files")
    context = build_context(
        metrics_path=metrics_path,
        ledger_path=ledger_path,
        test_scores_path=test_scores_path,
        test_store_paths=list(test_store_paths),
        batch_scores_paths=list(batch_scores_paths),
        batches=list(batches),
        rejected_batches=list(rejected_batches),
        model_paths=list(model_paths),
        methods=list(methods),
        config=config,
        benchmarks_root=benchmarks_root,
    )
    context["generated_utc"] = utc_now()
    context["generation_s"] = round(time.perf_counter() - t0, 2)
    html = render_html(context, templates_dir)
    data = sidecar(context)
    atomic_write_text(out_json, json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False) + "\n")
    atomic_write_text(out_html, html)
    log.info("report: %s (%.0f kB) and %s in %.1f s", out_html, len(html.encode()) / 1e3, out_json, time.perf_counter() - t0)
    return data
