"""The report's sections: each a function from what evaluation and the ledger wrote to the
template's context for that section (numbers are displayed, never recomputed here; the plates'
per-method counts and mean worm area share are tallies of the per-field numbers the summary wrote)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

from .. import CLASSES, plots
from ..ledger import pair_key
from .render import METRIC_KEYS, num, visible

QUARANTINE_HTML_MAX = 5000


def method_label(display: Mapping[str, dict], method: str) -> str:
    return display.get(method, {}).get("label", method)


# --------------------------------------------------------------------------- test-split metrics


def summary_row(name: str, block: dict, published: Mapping[str, float], display: Mapping[str, dict]) -> dict:
    """One row of the summary table: metrics, intervals, threshold, seeds and the published F1."""
    seed_summary = block.get("seed_summary") or {}
    seeds = list(block.get("seeds", []))
    return {
        "method": name,
        "label": method_label(display, name),
        "baseline": bool(display.get(name, {}).get("baseline")),
        "n_test": block.get("n_test"),
        "n_wormed": block.get("n_wormed"),
        "metrics": {k: block.get("metrics", {}).get(k) for k in (*METRIC_KEYS, "accuracy")},
        "intervals": {k: block.get("intervals", {}).get(k) for k in (*METRIC_KEYS, "accuracy")},
        "threshold": block.get("threshold"),
        "threshold_rule": block.get("threshold_rule", ""),
        "dev_f1": block.get("dev_f1"),
        "seeds": seeds,
        "seed_summary": {k: seed_summary[k] for k in METRIC_KEYS if k in seed_summary} if len(seeds) > 1 else {},
        "published_f1": block.get("published_f1", published.get(name)),
        "best": False,
        "below_floor": False,
    }


def summary_section(metrics: dict, methods: Sequence[str], floors: Sequence[str], display: Mapping[str, dict]) -> dict:
    """Methods side by side plus the floors; best F1 and methods below the (best) floor marked."""
    published = metrics.get("published_f1", {}) or {}
    rows = [summary_row(m, metrics["methods"][m], published, display) for m in methods]
    floor_rows = [summary_row(m, metrics["methods"][m], published, display) for m in floors]
    f1s = [num(r["metrics"]["f1"]) for r in rows]
    best = max((f for f in f1s if f is not None), default=None)
    floor_f1 = max((f for f in (num(r["metrics"]["f1"]) for r in floor_rows) if f is not None), default=None)
    for r, f in zip(rows, f1s):
        r["best"] = f is not None and f == best
        r["below_floor"] = f is not None and floor_f1 is not None and f < floor_f1
    every = [*rows, *floor_rows]
    return {
        "rows": rows,
        "floors": floor_rows,
        "n_test": metrics.get("n_test"),
        "n_wormed": next((r["n_wormed"] for r in every if r.get("n_wormed") is not None), None),
        "n_boot": metrics.get("n_boot"),
        "published_f1": dict(published),
        "published_notes": {k: v for k, v in published.items() if k not in metrics["methods"]},
        "evaluated_utc": metrics.get("generated_utc"),
    }


def confusion_section(metrics: dict, names: Sequence[str], display: Mapping[str, dict]) -> list[dict]:
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
                "label": method_label(display, name),
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


def evaluation_figures(metrics: dict, methods: Sequence[str], names: Sequence[str], display: Mapping[str, dict]) -> dict:
    """ROC/PR (methods and floors), threshold sweeps and histograms (methods) as data URIs."""
    blocks = metrics["methods"]
    out = {"roc_pr": None, "threshold": None, "histograms": None}
    curves = {n: blocks[n].get("curves", {}) for n in names}
    if any("roc" in c or "pr" in c for c in curves.values()):
        aurocs = {n: num(blocks[n]["metrics"].get("auroc")) for n in names}
        aps = {n: num(blocks[n]["metrics"].get("average_precision")) for n in names}
        out["roc_pr"] = plots.roc_pr_figure(curves, aurocs, aps, display)
    thresholds = {m: num(blocks[m].get("threshold")) for m in methods}
    sweeps = {m: blocks[m]["curves"]["threshold_sweep"] for m in methods if "threshold_sweep" in blocks[m].get("curves", {})}
    if sweeps:
        out["threshold"] = plots.threshold_sweep_figure(sweeps, thresholds, display)
    hists = {m: blocks[m]["histogram"] for m in methods if "histogram" in blocks[m]}
    if hists:
        out["histograms"] = plots.histogram_figure(hists, thresholds, display)
    return out


# --------------------------------------------------------------------------- galleries

RENDER = {"rgb": plots.rgb_thumb, "heat": plots.error_map_thumb, "mask": plots.mask_thumb}


def gallery_columns(methods: Sequence[str], display: Mapping[str, dict]) -> list[tuple[str, str]]:
    """``(key, title)`` of every thumbnail column: the original, then each method's gallery maps."""
    cols = [("original", "Original")]
    for m in methods:
        short = display[m].get("short", m)
        cols += [(f"{m}:{name}", f"{short} {title}") for name, title, _ in display[m].get("gallery", [])]
    return cols


def _gallery_entry(item: dict, methods: Sequence[str], display: Mapping[str, dict]) -> dict:
    label = item["label"]
    per = []
    for m in methods:
        r = item["methods"].get(m)
        p = None if r is None else num(r["pred"])
        per.append(
            {
                "method": m,
                "label": method_label(display, m),
                "score": None if r is None else num(r["score"]),
                "threshold": None if r is None else num(r["threshold"]),
                "pred": None if p is None else int(p),
                "pred_name": "–" if p is None else CLASSES[int(p)],
                "correct": None if p is None or label not in (0, 1) else int(p) == label,
            }
        )
    thumbs = {}
    if item.get("original") is not None:
        thumbs["original"] = plots.rgb_thumb(item["original"])
    for m in methods:
        maps = item["methods"].get(m, {}).get("maps", {})
        for name, _, kind in display[m].get("gallery", []):
            if name in maps:
                thumbs[f"{m}:{name}"] = RENDER[kind](maps[name])
    return {
        "id": item["id"],
        "id_visible": visible(item["id"]),
        "label": label,
        "label_name": CLASSES[label] if label in (0, 1) else "unlabeled",
        "methods": per,
        "thumbs": thumbs,
    }


def galleries_section(gallery: dict | None, methods: Sequence[str], display: Mapping[str, dict]) -> dict:
    """Per method: its misses and hits on the test split (selected by evaluation), each with its thumbnails."""
    columns = gallery_columns(methods, display)
    if gallery is None:
        return {"galleries": [], "columns": columns}
    shown = [m for m in methods if m in gallery["methods"]]
    entries = {}
    out = []
    for m in methods:
        g = gallery["galleries"].get(m)
        if g is None:
            out.append({"method": m, "label": method_label(display, m), "n_misses": 0, "n_hits": 0, "scored": False})
            out[-1].update(misses=[], hits=[])
            continue
        block = {"method": m, "label": method_label(display, m), "n_misses": g["n_misses"], "n_hits": g["n_hits"], "scored": True}
        for kind in ("misses", "hits"):
            block[kind] = []
            for k in g[kind]:
                if k not in entries:
                    entries[k] = _gallery_entry(gallery["items"][k], shown, display)
                block[kind].append(entries[k])
        out.append(block)
    return {"galleries": out, "columns": columns}


# --------------------------------------------------------------------------- batches (from the ledger)


def batch_row(summary: dict, methods: Sequence[str]) -> dict:
    """One batch as the ledger summarised it."""
    stats = summary.get("methods", {})
    return {
        "batch": summary["batch"],
        "batch_visible": visible(summary["batch"]),
        "unprocessed": False,
        "status": summary.get("status", ""),
        "error": summary.get("error", ""),
        "n_files": summary.get("n_files"),
        "n_scored": summary.get("n_scored"),
        "n_quarantined": summary.get("n_quarantined"),
        "flagged": {m: stats.get(m, {}).get("flagged_share") for m in methods},
        "ks": {m: stats.get(m, {}).get("ks") for m in methods},
        "drift": {m: bool(stats.get(m, {}).get("drift")) for m in methods},
        "drift_any": bool(summary.get("drift")),
        "agreement": summary.get("agreement") or {"all": None, "pairs": {}, "n": 0},
        "processing_s": summary.get("processing_s"),
        "gathered_utc": summary.get("gathered_utc", ""),
    }


def _not_processed_row(r: dict) -> dict:
    note = "not processed"
    if r.get("kind") == "failed":
        where = f"rule {r.get('failed_rule', '?')}" + (
            f", shard {r['failed_shard']}" if r.get("failed_shard") is not None else ""
        )
        note = f"failed in {where}; log: {r.get('log', '–')}"
        if r.get("detail"):
            note += f" ({r['detail']})"
    return {
        "batch": r["batch"],
        "batch_visible": visible(r["batch"]),
        "unprocessed": True,
        "kind": r.get("kind", "rejected"),
        "status": r["status"],
        "note": note,
        "flagged": {},
        "ks": {},
        "drift": {},
    }


def batches_section(ledger: dict, methods: Sequence[str]) -> list[dict]:
    """Rows for the batches (sorted by name = date), then those not processed tonight (failed,
    deferred) and the directories that are not usable batches."""
    rows = [batch_row(s, methods) for s in sorted(ledger.get("batches", []), key=lambda s: s["batch"])]
    rows += [_not_processed_row(r) for r in ledger.get("not_processed", [])]
    return rows


def latest_batches(rows: Sequence[dict], n: int | None) -> tuple[list[dict], list[str]]:
    """``(rows shown, names left out)``: the latest ``n`` processed batches (by name) and every row of a batch
    not processed tonight; ``n`` None shows all (config ``retention.report_detail_batches``)."""
    processed = [r["batch"] for r in rows if not r.get("unprocessed")]
    older = sorted(processed)[: max(len(processed) - n, 0)] if n is not None else []
    skip = set(older)
    return [r for r in rows if r.get("unprocessed") or r["batch"] not in skip], older


def agreement_pairs(methods: Sequence[str]) -> list[str]:
    return [pair_key(a, b) for a, b in combinations(methods, 2)]


def trends_section(rows: Sequence[dict], methods: Sequence[str], ks_max: float, display: Mapping[str, dict]) -> dict:
    """Flagged share and KS per method across the processed batches, sorted by name, and the figure."""
    scored = sorted((r for r in rows if not r.get("unprocessed")), key=lambda r: r["batch"])
    names = [r["batch"] for r in scored]
    flagged = {m: [r["flagged"].get(m) for r in scored] for m in methods}
    ks = {m: [r["ks"].get(m) for r in scored] for m in methods}
    beyond = [r["batch"] for r in scored if r.get("drift_any")]
    figure = plots.trend_figure(names, flagged, ks, ks_max, display) if names and methods else None
    return {"batches": names, "flagged": flagged, "ks": ks, "ks_max": ks_max, "beyond": beyond, "figure": figure}


def quarantine_section(ledger: dict, test_quarantine: Sequence[dict], skip: set[str] | frozenset = frozenset()) -> list[dict]:
    """Every quarantined file of every batch but those in ``skip`` (and of the test split), with its stage and reason."""
    batches = sorted(ledger.get("batches", []), key=lambda s: s["batch"])
    sources = [(s["batch"], s.get("quarantine", [])) for s in batches if s["batch"] not in skip]
    sources.append(("test split", test_quarantine))
    return [
        {"collection": coll, "id": q["id"], "id_visible": visible(q["id"]), "stage": q["stage"], "reason": q["reason"]}
        for coll, qs in sources
        for q in qs
    ]


# --------------------------------------------------------------------------- provenance


def model_provenance(method: str, block: dict, display: Mapping[str, dict]) -> dict:
    """Checkpoint hash, initialisation, seeds, epochs, times, device, rule and hashes, as evaluation recorded them."""
    model = block.get("model", {})
    return {
        "method": method,
        "label": method_label(display, method),
        "checkpoint": model.get("path", ""),
        "checkpoint_sha256": block.get("checkpoint_sha256"),
        "weights_init": block.get("weights_init", model.get("weights_init")),
        "seeds": block.get("seeds") or ([model["seed"]] if "seed" in model else []),
        "epochs_run": block.get("epochs_run", model.get("epochs_run")),
        "best_epoch": model.get("best_epoch"),
        "stopped_early": model.get("stopped_early"),
        "train_time_s": block.get("train_time_s", model.get("train_time_s")),
        "device": block.get("device", model.get("device")),
        "threshold": block.get("threshold", model.get("threshold")),
        "threshold_rule": block.get("threshold_rule", model.get("threshold_rule")),
        "config_hash": block.get("config_hash", model.get("config_hash")),
        "trained_utc": model.get("trained_utc"),
        "n_train": model.get("n_train"),
        "n_dev": model.get("n_dev"),
        "package_version": model.get("package_version"),
    }
