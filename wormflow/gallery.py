"""The galleries of the report: per method, the test images it gets most wrong and most right.

Evaluation selects them (:func:`select`) and writes ``results/eval/gallery.h5``
(:func:`write_gallery`): each selected image once — its original (from the test image stores, at
the largest stored resolution), its true label, every method's score and prediction and the maps
each method shows in galleries (``Method.gallery``) — and, per method, which images are its misses
and hits.  The report reads it back (:func:`read_gallery`) and only renders thumbnails.

Layout: ``items/{ids,labels,original}``, ``items/<method>/{score,pred,<map>...}``,
``galleries/<method>/{misses,hits}`` (rows of ``items``; attributes ``n_misses``, ``n_hits``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_path
from .scorefile import ScoreFile, read_method_rows
from .store import ImageStore, IncompleteFileError, open_complete, read_strings, write_table

log = logging.getLogger(__name__)


def _interleave(groups: Sequence[list[int]]) -> list[int]:
    out = []
    for k in range(max((len(g) for g in groups), default=0)):
        out += [g[k] for g in groups if k < len(g)]
    return out


def select(sf: ScoreFile, method: str, size: int) -> dict:
    """Row indices of misses (most wrong first) and hits (most confident first, classes interleaved)."""
    score, pred = sf.score.get(method), sf.pred.get(method)
    if score is None or pred is None or size <= 0:
        return {"misses": [], "hits": [], "n_misses": 0, "n_hits": 0}
    thr = sf.threshold.get(method)
    margin = np.abs(score - thr) if thr is not None and np.isfinite(thr) else np.abs(score - np.nanmedian(score))
    valid = np.isfinite(score) & np.isfinite(pred) & np.isin(sf.labels, (0, 1))
    wrong = valid & (pred != sf.labels)
    right = valid & (pred == sf.labels)
    misses = sorted(np.flatnonzero(wrong).tolist(), key=lambda i: (-margin[i], sf.ids[i]))
    by_class = [sorted(np.flatnonzero(right & (sf.labels == c)).tolist(), key=lambda i: (-margin[i], sf.ids[i])) for c in (1, 0)]
    hits = _interleave(by_class)
    return {"misses": misses[:size], "hits": hits[:size], "n_misses": int(wrong.sum()), "n_hits": int(right.sum())}


def read_originals(store_paths: Sequence[str], wanted: set[str]) -> dict[str, np.ndarray]:
    """The wanted images from the image stores, at each store's largest stored resolution."""
    out: dict[str, np.ndarray] = {}
    for path in store_paths:
        store = ImageStore.open(path)
        rows = [k for k, i in enumerate(store.ids) if i in wanted and i not in out]
        if rows:
            block = store.rows(max(store.sizes), rows)
            out.update({store.ids[r]: block[k] for k, r in enumerate(rows)})
    return out


def write_gallery(out: str, sf: ScoreFile, store_paths: Sequence[str], displays: Mapping[str, dict], size: int) -> None:
    picks = {m: select(sf, m, size) for m in displays}
    rows = sorted({r for p in picks.values() for r in (*p["misses"], *p["hits"])})
    originals = read_originals(store_paths, {sf.ids[r] for r in rows})
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        items = f.create_group("items")
        write_table(items, {"ids": np.array([sf.ids[r] for r in rows], dtype=object), "labels": sf.labels[rows].astype(np.int8)})
        if rows and all(sf.ids[r] in originals for r in rows):
            items.create_dataset("original", data=np.stack([originals[sf.ids[r]] for r in rows]))
        for m, display in displays.items():
            grp = items.create_group(m)
            grp.create_dataset("score", data=sf.score[m][rows].astype(np.float32))
            grp.create_dataset("pred", data=sf.pred[m][rows].astype(np.float32))
            grp.attrs["threshold"] = sf.threshold[m]
            maps = [name for name, _, _ in display["gallery"]]
            method_rows = [int(sf.rows[m][r]) for r in rows]
            if maps and rows and min(method_rows) >= 0:
                for name, data in read_method_rows(sf.path, m, maps, method_rows).items():
                    grp.create_dataset(name, data=data)
            pos = {r: k for k, r in enumerate(rows)}
            g = f.create_group(f"galleries/{m}")
            g.create_dataset("misses", data=np.array([pos[r] for r in picks[m]["misses"]], dtype=np.int64))
            g.create_dataset("hits", data=np.array([pos[r] for r in picks[m]["hits"]], dtype=np.int64))
            g.attrs["n_misses"], g.attrs["n_hits"] = picks[m]["n_misses"], picks[m]["n_hits"]
        f.attrs["methods"] = np.array(list(displays), dtype=object)
        f.attrs["complete"] = True
        f.attrs["format"] = "wormflow-gallery"


def read_gallery(path: str | Path) -> dict | None:
    """``{"items": [...], "galleries": {method: {...}}}`` as written by :func:`write_gallery` (None if unreadable)."""
    try:
        with open_complete(path, "wormflow-gallery") as f:
            items = f["items"]
            ids = read_strings(items["ids"])
            labels = items["labels"][()].astype(int)
            original = items["original"][()] if "original" in items else None
            methods = [m for m in read_strings_attr(f.attrs.get("methods", []))]
            entries = []
            for k, i in enumerate(ids):
                e = {"id": i, "label": int(labels[k]), "original": None if original is None else original[k], "methods": {}}
                for m in methods:
                    grp = items[m]
                    maps = {name: grp[name][k] for name in grp if name not in ("score", "pred")}
                    e["methods"][m] = {
                        "score": float(grp["score"][k]),
                        "pred": float(grp["pred"][k]),
                        "threshold": float(grp.attrs["threshold"]),
                        "maps": maps,
                    }
                entries.append(e)
            galleries = {
                m: {
                    "misses": f[f"galleries/{m}/misses"][()].tolist(),
                    "hits": f[f"galleries/{m}/hits"][()].tolist(),
                    "n_misses": int(f[f"galleries/{m}"].attrs["n_misses"]),
                    "n_hits": int(f[f"galleries/{m}"].attrs["n_hits"]),
                }
                for m in methods
            }
            return {"items": entries, "galleries": galleries, "methods": methods}
    except (IncompleteFileError, OSError, KeyError) as exc:
        log.warning("gallery %s not read: %s", path, exc)
        return None


def read_strings_attr(value) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in value]
