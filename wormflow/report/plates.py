"""The report's plates: batches of fields (raw microscope output), drawn as their plates.

A batch of raw microscope output has, in its summary, a "fields" object (written by the ledger's
summarize step): per field (one well's channel files composed into one RGB image, or one large
image) its status and, per method, the estimated worm area share, tile counts, max score and
decision; the methods' agreement on fields and on tiles; the share of tiles each method flagged.
Beside summary.json, thumbnails.json holds the small JPEGs (composite, each method's map over it).
The latest ``report.plates`` batches of fields are shown in detail (plate maps, tables, thumbnails);
the trends cover every batch of fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

from .. import plots
from ..ledger import pair_key
from .render import num
from .sections import method_label

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
