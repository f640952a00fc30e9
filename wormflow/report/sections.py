"""The report's sections: each a function from what evaluation and the ledger wrote to the
template's context for that section (numbers are displayed, never recomputed here; the plates'
per-method counts and mean worm area share are tallies of the per-field numbers the summary wrote)."""

from __future__ import annotations

import re
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


# --------------------------------------------------------------------------- plates (batches of fields)
#
# A batch of raw microscope output has, in its summary, a "fields" object (written by the ledger's summarize
# step): per field (one well's channel files composed into one RGB image, or one large image) its status and,
# per method, the estimated worm area share, tile counts, max score and decision; the methods' agreement on
# fields and on tiles; the share of tiles each method flagged.  Beside summary.json, thumbnails.json holds the
# small JPEGs (composite, each method's map over it).  The latest ``report.plates`` batches of fields are
# shown in detail (plate maps, tables, thumbnails); the trends cover every batch of fields.

_PLATE_WELL = re.compile(r"([A-P])([0-9]{1,2})")
DEFAULT_THUMB_SIZE = (160, 120)
THUMB_SHOW_MAX_W = 144  # px: the composite and four maps beside the field's numbers fit the page
THUMBNAIL_BUDGET = 12_000_000  # characters of thumbnail data: URIs on one page (the defaults with real-sized JPEGs: ~5 MB)


def plate_position(well: object) -> tuple[int, int] | None:
    """``(row, column)``, 0-based, of a plate well id ``A01`` … ``P24`` (or ``A1``); None for any other string."""
    m = _PLATE_WELL.fullmatch(well) if isinstance(well, str) else None
    if m is None or not 1 <= int(m.group(2)) <= 24:
        return None
    return ord(m.group(1)) - ord("A"), int(m.group(2)) - 1


def field_summaries(ledger: dict) -> list[dict]:
    """The batch summaries that hold fields (a ``fields`` object), sorted by batch name (= date)."""
    return sorted((s for s in ledger.get("batches", []) if isinstance(s.get("fields"), dict)), key=lambda s: s["batch"])


def detailed_batches(ledger: dict, n: int) -> list[str]:
    """The latest ``n`` batches of fields (by name): those the Plates section shows in detail."""
    names = [s["batch"] for s in field_summaries(ledger)]
    return names[-n:] if n > 0 else []


def _field(w: Mapping) -> dict:
    """One row of ``fields.wells`` with every key the report reads (strings as strings, methods as dicts)."""
    methods = w.get("methods") if isinstance(w.get("methods"), Mapping) else {}
    files = w.get("files") if isinstance(w.get("files"), list) else []
    return {
        "id": str(w.get("id", "")),
        "well": str(w.get("well", "")),
        "kind": str(w.get("kind", "field")),
        "status": str(w.get("status", "")),
        "reason": str(w.get("reason", "")),
        "files": [str(f) for f in files],
        "methods": {str(m): dict(v) for m, v in methods.items() if isinstance(v, Mapping)},
    }


def _fields_rows(fields: Mapping) -> list[dict]:
    wells = fields.get("wells")
    return [_field(w) for w in wells if isinstance(w, Mapping)] if isinstance(wells, list) else []


def _share(row: dict, method: str) -> float | None:
    """The field's estimated worm area share for ``method`` when the field was scored (status ok)."""
    return num(row["methods"].get(method, {}).get("worm_share")) if row["status"] == "ok" else None


def field_methods(fields_list: Sequence[Mapping], methods: Sequence[str]) -> list[str]:
    """The methods the fields name: the configured ones first, in their order, then any other."""
    present: dict[str, None] = {}
    for fields in fields_list:
        for row in _fields_rows(fields):
            present.update(dict.fromkeys(row["methods"]))
        if isinstance(fields.get("tiles_flagged"), Mapping):
            present.update(dict.fromkeys(map(str, fields["tiles_flagged"])))
    return [m for m in methods if m in present] + [m for m in present if m not in methods]


def _pred(value: object) -> float | None:
    """A decision (0 or 1; ``true``/``false`` too), or None."""
    return float(value) if isinstance(value, bool) else num(value)


def field_method_stats(rows: Sequence[dict], fields: Mapping, method: str) -> dict:
    """One method on one batch of fields: fields scored, fields flagged (its decision), the mean estimated worm
    area share over its scored fields (counts and a mean of what the summary wrote), and the summary's share of
    tiles flagged."""
    scored = [r["methods"][method] for r in rows if r["status"] == "ok" and method in r["methods"]]
    preds = [p for p in (_pred(s.get("pred")) for s in scored) if p is not None]
    shares = [v for v in (num(s.get("worm_share")) for s in scored) if v is not None]
    tiles = fields.get("tiles_flagged") if isinstance(fields.get("tiles_flagged"), Mapping) else {}
    return {
        "method": method,
        "n_scored": len(scored),
        "n_flagged": sum(1 for p in preds if p == 1),
        "flagged_share": (sum(1 for p in preds if p == 1) / len(preds)) if preds else None,
        "mean_worm_share": float(np.mean(shares)) if shares else None,
        "tiles_flagged": num(tiles.get(method)),
    }


def _agreement(block: object, methods: Sequence[str]) -> dict:
    """An agreement object of the summary (``all``, ``pairs``, ``n``) with its pairs in the methods' order."""
    block = block if isinstance(block, Mapping) else {}
    pairs = block.get("pairs") if isinstance(block.get("pairs"), Mapping) else {}
    ordered = {}
    for a, b in combinations(methods, 2):
        key = pair_key(a, b)
        ordered[key] = num(pairs.get(key, pairs.get(pair_key(b, a))))
    return {"all": num(block.get("all")), "pairs": ordered, "n": block.get("n")}


def _plate_order(row: dict) -> tuple:
    pos = row["position"]
    return (0, *pos, row["id"]) if pos is not None else (1, 0, 0, row["well"], row["id"])


def _thumb_size(thumbnails: Mapping | None) -> tuple[int, int]:
    w, h = (thumbnails or {}).get("size") or DEFAULT_THUMB_SIZE
    scale = min(1.0, THUMB_SHOW_MAX_W / w)
    return max(1, round(w * scale)), max(1, round(h * scale))


def plate_block(
    summary: dict,
    methods: Sequence[str],
    display: Mapping[str, dict],
    thumbnails: Mapping | None,
    max_rows: int,
    thumbnails_file: str,
    index: int,
) -> dict:
    """One detailed batch of fields: its plate maps (one per method, one colour scale for the batch), the
    per-method table, the agreement, the fields not on a plate, and the per-well thumbnail rows (plate order,
    at most ``max_rows``)."""
    fields = summary["fields"]
    rows = _fields_rows(fields)
    names = field_methods([fields], methods)
    for r in rows:
        r["position"] = plate_position(r["well"]) if r["kind"] == "field" else None
    rows.sort(key=_plate_order)
    on_plate = [r for r in rows if r["position"] is not None]
    n_wells = None
    if on_plate:
        n_wells = 96 if all(r < 8 and c < 12 for r, c in (x["position"] for x in on_plate)) else 384
    positions = [r["position"] for r in on_plate]
    shared = sorted({p for p in positions if positions.count(p) > 1})
    per_method: dict[str, dict[tuple[int, int], float]] = {}
    for m in names:
        values: dict[tuple[int, int], list[float]] = {}
        for r in on_plate:
            if (v := _share(r, m)) is not None:
                values.setdefault(r["position"], []).append(v)
        per_method[m] = {p: float(np.mean(v)) for p, v in values.items()}
    scale = max((v for d in per_method.values() for v in d.values()), default=None)
    figures = {}
    if n_wells:
        for m in names:
            figures[m] = plots.plate_figure(
                n_wells,
                per_method[m],
                positions,
                scale or 0.0,
                f"{method_label(display, m)}: estimated worm area share",
                f"plate-{index}-{m}",
            )
    thumbs = (thumbnails or {}).get("wells", {})
    shown = []
    for r in rows[: max(0, max_rows)]:
        t = thumbs.get(r["id"], {})  # keyed by field id: two plates in one batch may share a well
        shown.append({**r, "thumbs": {"composite": t.get("composite"), **{m: t.get("maps", {}).get(m) for m in names}}})
    n_quarantined = sum(1 for r in rows if r["status"] != "ok")
    return {
        "batch": summary["batch"],
        "anchor": f"plate-{index}",
        "tile": fields.get("tile"),
        "stride": fields.get("stride"),
        "methods": names,
        "labels": {m: method_label(display, m) for m in names},
        "n_fields": len(rows),
        "n_ok": len(rows) - n_quarantined,
        "n_quarantined": n_quarantined,
        "n_wells": n_wells,
        "n_on_plate": len(on_plate),
        "shared_positions": len(shared),
        "scale_max": scale,
        "table": [field_method_stats(rows, fields, m) for m in names],
        "agreement_fields": _agreement(fields.get("agreement_fields"), names),
        "agreement_tiles": _agreement(fields.get("agreement_tiles"), names),
        "pairs": [pair_key(a, b) for a, b in combinations(names, 2)],
        "figures": figures,
        "off_plate": [r for r in rows if r["position"] is None],
        "rows": rows,
        "shown": shown,
        "n_left_out": len(rows) - len(shown),
        "thumbnails_file": thumbnails_file,
        "thumbnails_read": thumbnails is not None,
        "thumb_size": _thumb_size(thumbnails),
    }


def plates_section(
    ledger: dict,
    methods: Sequence[str],
    display: Mapping[str, dict],
    thumbnails: Mapping[str, Mapping | None],
    thumbnail_files: Mapping[str, str],
    n_plates: int,
    max_rows: int,
) -> dict:
    """The latest ``n_plates`` batches of fields in detail (:func:`plate_block`), and how many older ones the
    page leaves to the trends and the sidecar."""
    detailed = set(detailed_batches(ledger, n_plates))
    summaries = field_summaries(ledger)
    chosen = [s for s in summaries if s["batch"] in detailed]
    blocks = [
        plate_block(s, methods, display, thumbnails.get(s["batch"]), max_rows, thumbnail_files.get(s["batch"], ""), i)
        for i, s in enumerate(reversed(chosen))  # the latest first
    ]
    _within_budget(blocks, THUMBNAIL_BUDGET)
    return {
        "batches": blocks,
        "n_field_batches": len(summaries),
        "n_plates": n_plates,
        "max_rows": max_rows,
        "thumbnail_budget": THUMBNAIL_BUDGET,
    }


def _within_budget(blocks: Sequence[dict], budget: int) -> None:
    """Keep the thumbnail rows (latest batch first, plate order) while their images fit in ``budget`` characters;
    the rows after the first that does not fit are left out (``budget_reached``), whatever thumbnails.json holds."""
    used, full = 0, False
    for b in blocks:
        keep = []
        for r in b["shown"]:
            n = sum(len(u) for u in r["thumbs"].values() if u)
            if full or used + n > budget:
                full = True
                break
            used += n
            keep.append(r)
        b["budget_reached"] = full and len(keep) < len(b["shown"])
        b["shown"], b["n_left_out"] = keep, len(b["rows"]) - len(keep)


def field_trends(ledger: dict, methods: Sequence[str], display: Mapping[str, dict]) -> dict:
    """Every batch of fields, by name: per method the mean estimated worm area share and the share of fields
    flagged (as in the Plates tables), and the figure."""
    summaries = field_summaries(ledger)
    names = field_methods([s["fields"] for s in summaries], methods)
    mean_share: dict[str, list] = {m: [] for m in names}
    flagged: dict[str, list] = {m: [] for m in names}
    for s in summaries:
        rows = _fields_rows(s["fields"])
        for m in names:
            st = field_method_stats(rows, s["fields"], m)
            mean_share[m].append(st["mean_worm_share"])
            flagged[m].append(st["flagged_share"])
    batches = [s["batch"] for s in summaries]
    figure = plots.field_trend_figure(batches, mean_share, flagged, display) if batches and names else None
    return {"batches": batches, "mean_worm_share": mean_share, "flagged_share": flagged, "figure": figure}


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
