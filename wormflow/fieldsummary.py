"""A batch's fields in its summary: one row per field (scored or not), the methods' agreement on
fields and on tiles, and the thumbnails the report shows (``thumbnails.json``).

Every field the imager wrote appears: a scored field with each method's numbers
(:data:`wormflow.scorefields.UNIT_COLUMNS`), a field whose files were quarantined (a channel
missing, two files for a channel, an unreadable or changed file, no specimen area) with
``status: "quarantined"`` and the reasons, so that the plate view marks that well.

Thumbnails: the composite shrunk to ``tiling.thumbnail_width`` when decoded, and per method its
field map shrunk the same way and blended over the composite (inferno colour scale, opacity
growing with the map value up to twice the method's map threshold: a colour at the same place
means the same thing in every method's picture), as base64 JPEG ``data:`` URIs of ~2–3 kB.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from .fields import FieldPattern
from .scorefields import UNIT_COLUMNS, FieldScores
from .tiling import map_to_thumbnail

JPEG_QUALITY = 75


def _value(v) -> float | int | None:
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return round(v, 6) if isinstance(v, float) else v


def scored_rows(fs: FieldScores, methods: Sequence[str]) -> list[dict]:
    rows = []
    for k, u in enumerate(fs.units):
        per = {m: {c: _value(fs.methods[m].units[c][k]) for c in UNIT_COLUMNS} for m in methods if m in fs.methods}
        rows.append({"id": u.id, "well": u.well, "kind": u.kind, "status": "ok", "files": list(u.files), "methods": per})
    return rows


def quarantined_rows(quarantine: Sequence[Mapping], pattern: str | None) -> list[dict]:
    """Fields none of whose files were scored: quarantined files grouped by the field pattern."""
    if not pattern:
        return []
    fp = FieldPattern(pattern)
    groups: dict[str, dict] = {}
    for q in quarantine:
        m = fp.match(q["id"])
        if m is None:
            continue
        fid, well, _ = m
        g = groups.setdefault(
            fid, {"id": fid, "well": well, "kind": "field", "status": "quarantined", "files": [], "reasons": []}
        )
        g["files"].append(q["id"])
        if q["reason"] not in g["reasons"]:
            g["reasons"].append(q["reason"])
    rows = []
    for g in groups.values():
        reasons = g.pop("reasons")
        rows.append({**g, "reason": "; ".join(reasons), "methods": {}})
    return rows


def tile_agreement(fs: FieldScores, methods: Sequence[str]) -> tuple[dict, dict]:
    """``(agreement on the counted tiles, share of counted tiles each method flagged)``."""
    from .ledger import agreement

    present = [m for m in methods if m in fs.methods]
    preds = {}
    for m in present:
        t = fs.methods[m].tiles
        preds[m] = t["pred"][t["in_area"] == 1].astype(np.float64)
    flagged = {m: (float(p.mean()) if len(p) else None) for m, p in preds.items()}
    return agreement(preds), flagged


def fields_summary(fs: FieldScores, methods: Sequence[str], quarantine: Sequence[Mapping], pattern: str | None) -> dict | None:
    """The ``fields`` block of a batch summary (None when the batch holds no field, scored or not)."""
    from .ledger import agreement

    rows = scored_rows(fs, methods) + quarantined_rows(quarantine, pattern)
    if not rows:
        return None
    attrs = next(iter(fs.methods.values())).attrs if fs.methods else {}
    agree_tiles, flagged = tile_agreement(fs, methods)
    return {
        "tile": attrs.get("tile"),
        "stride": attrs.get("stride"),
        "min_in_area": attrs.get("min_in_area"),
        "maps": {
            m: {"map": f.attrs.get("map"), "threshold": _value(f.attrs.get("map_threshold"))} for m, f in fs.methods.items()
        },
        "n_fields": len(fs),
        "n_quarantined": len(rows) - len(fs),
        "wells": rows,
        "agreement_fields": agreement({m: fs.methods[m].units["pred"].astype(np.float64) for m in methods if m in fs.methods}),
        "agreement_tiles": agree_tiles,
        "tiles_flagged": flagged,
    }


# --------------------------------------------------------------------------- thumbnails


def jpeg_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _inferno() -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


def overlay(composite: np.ndarray, small_map: np.ndarray, threshold: float, lut: np.ndarray) -> np.ndarray:
    """The map (shrunk to the composite's size) over the composite: colour and opacity grow with
    ``map / (2 × threshold)``."""
    v = np.clip(small_map.astype(np.float32) / max(2.0 * threshold, 1e-6), 0, 1)
    heat = lut[np.rint(v * 255).astype(np.int64)]
    a = (0.8 * v)[..., None]
    return np.clip(composite.astype(np.float32) * (1 - a) + heat * a, 0, 255).astype(np.uint8)


def thumbnails(fs: FieldScores, methods: Sequence[str], width: int) -> dict:
    """``{"size": [w, h], "wells": {field id: {"composite": uri, "maps": {method: uri}}}}`` of the scored fields."""
    lut = _inferno() if len(fs) else None
    wells, size = {}, None
    if not len(fs):
        return {"size": [int(width), int(round(width * 3 / 4))], "wells": wells}
    with fs.open() as f:  # one open for every field's thumbnail and maps
        for k, u in enumerate(fs.units):
            comp = fs.thumb(k, f)
            size = size or [int(comp.shape[1]), int(comp.shape[0])]
            maps = {}
            for m in methods:
                if m not in fs.methods:
                    continue
                small = map_to_thumbnail(fs.map(m, k, f), (comp.shape[1], comp.shape[0]))
                maps[m] = jpeg_uri(overlay(comp, small, float(fs.methods[m].attrs.get("map_threshold", 128.0)), lut))
            wells[u.id] = {"composite": jpeg_uri(comp), "maps": maps}
    return {"size": size or [int(width), int(round(width * 3 / 4))], "wells": wells}
