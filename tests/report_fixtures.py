"""Small synthetic inputs for the report, made by the workflow's own steps (a second or two).

``make_report_inputs(root, methods)`` builds, under ``root``, what :func:`wormflow.report.report_step`
reads, the way the workflow makes it: test image stores and score parts (the package's HDF5
writers) gathered into ``labeled/test/scores.h5``, model sidecars, then the real
:func:`wormflow.evaluate.evaluate_step` (``eval/metrics.json``, ``eval/gallery.h5``), three
batches (a normal one with hostile and odd quarantined file names, an empty one, one whose files
were all quarantined) summarised by :func:`wormflow.ledger.summarize_batch_step`, and
:func:`wormflow.ledger.ledger_step` (``ledger.json``) with a rejected directory whose name is
hostile, plus a few benchmark files.  It returns the keyword arguments for ``report_step``
(without the outputs), the metrics and the hostile strings used.

Batches of fields (raw microscope output: per well two channel files composed into one field,
tiled and scored per tile; ``field_batches``, e.g. :data:`FIELD_BATCHES`): their
``summary.json`` (with the ``fields`` object) and ``thumbnails.json`` are written directly, as the
ledger's summarize step writes them (the data contract the report reads; see
:func:`field_summary`), with synthetic JPEG thumbnails of about the size of real ones (160×120,
quality 75: BBBC010 composites ~2.7 kB, map overlays ~2.3 kB).
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from wormflow import paths as P
from wormflow.evaluate import evaluate_step
from wormflow.inventory import Entry, Manifest
from wormflow.ledger import agreement, ledger_step, pair_key, summarize_batch_step
from wormflow.pipeline import gather_step
from wormflow.scorefile import write_score_part
from wormflow.store import ImageStoreWriter

SIZE = 16
HOSTILE_FILE = "x<img src=x onerror=alert(1)>.png"
HOSTILE_REASON = "cannot decode: <script>alert(\"reason\")</script> & 'quotes'"
TITLE = "Worm report <b>test</b>"
HOSTILE_BATCH = "bad batch<img src=x onerror=alert(2)>"
ODD_FILE = 'wörm 🪱 "q" \u202egnp.exe'
THRESHOLDS = {"vae": 0.5, "gan": 0.45, "resnet50": 0.3, "dark_pixels": 0.45}
PUBLISHED = {"vae": 0.871, "gan": 0.88, "gan_mixed": 0.66, "resnet50": 0.9032}
TEST_LABELS = np.array([k % 2 for k in range(16)], dtype=np.int64)
FEATURES = {"vae": 3, "gan": 5, "resnet50": 1, "dark_pixels": 1}
MAPS = {"vae": ("recon", "error_map", "colour_mask"), "gan": ("recon", "error_map", "colour_mask")}
BATCHES = ["2026-01-01", "2026-01-02", "2026-01-03"]

# ---- batches of fields
FIELD_METHODS = ("vae", "gan", "resnet50", "dark_pixels")
PLATE_ROWS = "ABCDEFGHIJKLMNOP"
HOSTILE_WELL = 'A01"><img src=x onerror=alert(3)>\u202eFIT.tif'
HOSTILE_FIELD_FILE = "plate_Z99_w1_<script>alert(5)</script>.tif"
HOSTILE_FIELD_REASON = 'field plate_Z99: <b>channel</b> w2 missing & "quoted"'
BAD_THUMB = "javascript:alert(6)"
THUMB_SIZE = (160, 120)


def plate_wells(n: int, cols: int = 24) -> list[str]:
    """The first ``n`` wells of a plate with ``cols`` columns in row-major order (A01, A02, …)."""
    return [f"{PLATE_ROWS[k // cols]}{k % cols + 1:02d}" for k in range(n)]


# name → spec: wells (plate ids), quarantined {well: reason}, images (kind "image" rows), hostile rows, thumbnails
FIELD_BATCHES = {
    "2026-02-01": {"wells": plate_wells(30)},  # the oldest: trends only (report.plates = 3)
    "2026-02-02": {"wells": [], "images": ["big_scan_1.tif", HOSTILE_WELL]},
    "2026-02-03": {
        "wells": plate_wells(24, cols=12),
        "quarantined": {"B03": "field plate_B03: channel w1 missing"},
        "thumbnails": "missing",
    },
    "2026-02-04": {
        "wells": plate_wells(97),
        "quarantined": {"D24": "field 1649_1109_0003_Amp5-1_B_20070424_D24: channel w2 missing"},
        "hostile": True,
        "thumbnails": "bad-uri",
    },
}


def _images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _write_store(path: Path, ids: list[str], labels: list[int], rng: np.random.Generator, quarantine=()) -> None:
    """An image store at two sizes (galleries use the larger)."""
    w = ImageStoreWriter(path, sizes=[8, SIZE], rows=4, filters={}, attrs={"shard": 0, "shard_digest": "d"})
    for i, label in zip(ids, labels):
        img = _images(rng, 1, SIZE)[0]
        w.add(i, label, "0" * 64, (SIZE, SIZE), {8: img[::2, ::2], SIZE: img})
    for relpath, reason in quarantine:
        w.add_quarantine(relpath, reason)
    w.close()


def _scores(rng: np.random.Generator, labels: np.ndarray, method: str) -> np.ndarray:
    """Informative but imperfect scores (the resnet50 ones are noisier)."""
    noise = 0.35 if method == "resnet50" else 0.25
    return np.clip(0.3 + 0.4 * labels + rng.normal(0, noise, len(labels)), 0, 1).astype(np.float32)


def _test_scores(method: str, seed: int = 0) -> np.ndarray:
    """The test scores of ``method`` (the same for any subset of methods)."""
    base = _scores(np.random.default_rng(sum(map(ord, method))), TEST_LABELS, method)
    if seed == 0:
        return base
    return np.clip(base + np.random.default_rng(100 + seed).normal(0, 0.05, len(base)), 0, 1).astype(np.float32)


def _write_part(path: Path, method: str, seed: int, ids: list[str], scores: np.ndarray, rng) -> None:
    n = len(ids)
    cols = {
        "ids": np.array(ids, dtype=object),
        "score": scores.astype(np.float32),
        "pred": (scores >= THRESHOLDS[method]).astype(np.int8),
        "features": rng.normal(size=(n, FEATURES[method])).astype(np.float32),
    }
    for name in MAPS.get(method, ()):
        shape = (n, SIZE, SIZE, 3) if name == "recon" else (n, SIZE, SIZE)
        cols[name] = rng.integers(0, 2 if name == "colour_mask" else 256, shape, dtype=np.uint8)
    attrs = {
        "method": method,
        "seed": seed,
        "threshold": THRESHOLDS[method],
        "threshold_rule": "F1-max on dev (synthetic)",
        "checkpoint_sha256": f"{seed:02d}" * 32,
        "config_hash": "0123456789abcdef",
        "weights_init": "random initialisation",
        "feature_names": [f"f{k}" for k in range(FEATURES[method])],
    }
    write_score_part(path, cols, attrs, rows=4, filters={})


def _score_shard(coll_dir: Path, k: int, ids: list[str], scores_of, methods, seeds: dict, rng) -> Path:
    """Score parts of one shard and the index the scoring job writes."""
    parts_dir = coll_dir / "shards" / f"{k}.parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    listed = []
    for m in methods:
        for s in seeds[m]:
            name = f"{m}.seed{s}.key.h5"
            _write_part(parts_dir / name, m, s, ids, scores_of(m, s), rng)
            listed.append({"method": m, "seed": s, "file": name, "checkpoint_sha256": f"{s:02d}" * 32})
    index = coll_dir / "shards" / f"{k}.scores.json"
    index.write_text(json.dumps({"parts": listed}))
    return index


def _manifest(path: Path, root: str, ids: list[str], quarantine=()) -> None:
    entries = [Entry(relpath=i, size=1, mtime_ns=0, ctime_ns=0, sha256="0" * 64) for i in ids]
    entries += [Entry(relpath=r, size=0, mtime_ns=0, ctime_ns=0, quarantine=why) for r, why in quarantine]
    Manifest(root=root, labeled=False, shard_size=8, entries=entries).write(path)


def _model_sidecar(root: Path, method: str, seed: int) -> str:
    path = root / P.model(method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {
        "method": method,
        "seed": seed,
        "threshold": THRESHOLDS[method],
        "threshold_rule": "F1-max on dev (synthetic)",
        "dev_f1": 0.8,
        "weights_init": "random initialisation",
        "epochs_run": 2,
        "best_epoch": 2,
        "stopped_early": False,
        "device": "cpu",
        "train_time_s": 1.5,
        "n_train": 10,
        "n_dev": 10,
        "config_hash": "0123456789abcdef",
        "dev_scores": [0.1, 0.2, 0.6, 0.8, 0.9],
        "trained_utc": "2026-01-01T00:00:00Z",
        "package_version": "0.1.0",
    }
    (path.parent / "model.json").write_text(json.dumps(sidecar))
    return str(path)


def _benchmarks(root: Path) -> None:
    def tsv(rel: str, seconds: float) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t100\n")

    tsv(P.benchmark("train", "vae", "seed0"), 3.0)
    tsv(P.benchmark("decode_shard", P.TEST, 0), 0.5)
    tsv(P.benchmark("score_shard", P.TEST, 0), 2.0)
    tsv(P.benchmark("score_shard", P.TEST, 1), 1.0)
    tsv(P.benchmark("gather", P.TEST), 0.25)
    tsv(P.benchmark("score_shard", P.batch_collection(BATCHES[0]), 0), 1.0)


# --------------------------------------------------------------------------- batches of fields

_YY, _XX = np.mgrid[0 : THUMB_SIZE[1], 0 : THUMB_SIZE[0]]
_DISC = np.clip((58 - np.hypot(_YY - THUMB_SIZE[1] / 2, _XX - THUMB_SIZE[0] / 2)) / 3, 0, 1)
_HEAT = (matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def _jpeg_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _well_thumbnails(rng: np.random.Generator, methods: Sequence[str]) -> dict:
    """A synthetic well (bright disc, sensor noise, a few dark worms) and each method's map blended over it,
    as 160×120 JPEGs (~3.2 kB and ~2.3 kB: a little above BBBC010's real thumbnails)."""
    h, w = THUMB_SIZE[1], THUMB_SIZE[0]
    g = 25 + _DISC * (150 + 25 * np.cos(_XX / 40 + rng.random() * 6)) + rng.normal(0, 6, (h, w))
    worm = np.zeros((h, w))
    t = np.linspace(0, 1, 60)
    for _ in range(rng.integers(0, 4)):
        a, cx, cy = rng.uniform(0, 6), rng.uniform(40, 120), rng.uniform(30, 90)
        worm[
            (cy + 30 * (t - 0.5) * np.sin(a) + 5 * np.cos(t * 9)).astype(int).clip(0, h - 1),
            (cx + 30 * (t - 0.5) * np.cos(a) + 5 * np.sin(t * 9)).astype(int).clip(0, w - 1),
        ] = 1
    worm = ndi.maximum_filter(worm, 2)
    g = g - 90 * worm * _DISC
    red = 8 + 4 * _DISC + rng.normal(0, 2, (h, w)) + 60 * worm * (rng.random() < 0.3)
    rgb = np.stack([red, g, g], -1).clip(0, 255).astype(np.uint8)
    maps = {}
    for m in methods:
        heat = np.clip(ndi.gaussian_filter(worm, 4) * 6 + rng.random() * 0.05, 0, 1)
        maps[m] = _jpeg_uri((0.5 * rgb + 0.5 * _HEAT[(heat * 255).astype(np.uint8)]).astype(np.uint8))
    return {"composite": _jpeg_uri(rgb), "maps": maps}


def _field_row(rng: np.random.Generator, fid: str, well: str, kind: str, files: list[str], methods: Sequence[str]) -> dict:
    """A scored field: per method its estimated worm area share, tiles (of a 696×520 field, 64 px, stride 32:
    336), tiles in the well area, wormed tiles, largest tile score and decision."""
    n_in_area = int(rng.integers(150, 200))
    per = {}
    for m in methods:
        n_wormed = int(rng.integers(0, 12)) if rng.random() < 0.6 else 0
        per[m] = {
            "worm_share": round(float(n_wormed * rng.uniform(0.0004, 0.003)), 6),
            "n_tiles": 336,
            "n_in_area": n_in_area,
            "n_wormed": n_wormed,
            "max_score": round(float(rng.uniform(0.5, 1.0) if n_wormed else rng.uniform(0.0, 0.5)), 4),
            "pred": int(n_wormed > 0),
        }
    return {"id": fid, "well": well, "kind": kind, "status": "ok", "files": files, "methods": per}


def field_summary(name: str, spec: Mapping, methods: Sequence[str], rng: np.random.Generator) -> tuple[dict, dict | None]:
    """``(summary, thumbnails)`` of one batch of fields, as the ledger's summarize step writes them.

    The summary has the keys of every batch summary (counts, per-method flagged share of the fields,
    agreement, quarantine list) and ``fields``: ``tile``, ``stride``, ``wells`` (per field: ``id``, ``well``,
    ``kind`` ``field``/``image``, ``status`` ``ok``/``quarantined``, ``reason`` when quarantined, ``files``,
    ``methods`` — empty when quarantined), ``agreement_fields`` (from the fields' decisions),
    ``agreement_tiles``, ``tiles_flagged`` (wormed tiles over tiles in the area).  The thumbnails:
    ``{"size": [160, 120], "wells": {field id: {"composite": uri, "maps": {method: uri}}}}`` for every field with
    a composite (not the quarantined ones); None when ``spec["thumbnails"]`` is ``missing`` (nothing to make)."""
    plate = "1649_1109_0003_Amp5-1_B_20070424"
    rows, quarantine = [], []
    quarantined = dict(spec.get("quarantined", {}))
    for well in spec.get("wells", []):
        fid = f"{plate}_{well}"
        files = [f"{fid}_w1_{well}GUID1.tif", f"{fid}_w2_{well}GUID2.tif"]
        if well in quarantined:
            rows.append({"id": fid, "well": well, "kind": "field", "status": "quarantined", "reason": quarantined[well]})
            rows[-1].update(files=files[:1], methods={})
            quarantine.append({"id": files[0], "stage": "fields", "reason": quarantined[well]})
        else:
            rows.append(_field_row(rng, fid, well, "field", files, methods))
    for image in spec.get("images", []):
        rows.append(_field_row(rng, image, image, "image", [image], methods))
    if spec.get("hostile"):
        rows.append(_field_row(rng, f"{plate}_{HOSTILE_WELL}", HOSTILE_WELL, "field", [HOSTILE_WELL], methods))
        rows.append({"id": "plate_Z99", "well": "Z99", "kind": "field", "status": "quarantined", "reason": HOSTILE_FIELD_REASON})
        rows[-1].update(files=[HOSTILE_FIELD_FILE], methods={})
        quarantine.append({"id": HOSTILE_FIELD_FILE, "stage": "fields", "reason": HOSTILE_FIELD_REASON})
    ok = [r for r in rows if r["status"] == "ok"]
    preds = {m: np.array([r["methods"][m]["pred"] for r in ok], dtype=np.float64) for m in methods}
    n_area = sum(r["methods"][methods[0]]["n_in_area"] for r in ok) if ok else 0
    tiles = {m: (sum(r["methods"][m]["n_wormed"] for r in ok) / n_area if n_area else None) for m in methods}
    pairs = {pair_key(a, b): round(float(rng.uniform(0.9, 1.0)), 4) for a, b in combinations(methods, 2)}
    fields = {
        "tile": 64,
        "stride": 32,
        "wells": rows,
        "agreement_fields": agreement(preds),
        "agreement_tiles": {"all": round(min(pairs.values()) - 0.01, 4), "pairs": pairs, "n": n_area},
        "tiles_flagged": tiles,
    }
    n_files = sum(len(r["files"]) for r in rows)
    summary = {
        "batch": name,
        "status": "ok" if ok else "nothing scorable",
        "n_files": n_files,
        "n_scored": n_files - len(quarantine),
        "n_quarantined": len(quarantine),
        "n_shards": 1,
        "gathered_utc": "2026-02-01T03:00:00Z",
        "summarized_utc": "2026-02-01T03:01:00Z",
        "manifest_digest": "",
        "methods": {
            m: {"flagged_share": float(preds[m].mean()) if ok else None, "quantiles": {}, "ks": None, "drift": False}
            for m in methods
        },
        "drift": False,
        "agreement": fields["agreement_fields"],
        "processing_s": 12.5,
        "jobs": {},
        "quarantine": quarantine,
        "fields": fields,
    }
    if spec.get("thumbnails") == "missing":
        return summary, None
    thumbs = {r["id"]: _well_thumbnails(rng, methods) for r in rows if r["status"] == "ok"}
    return summary, {"size": list(THUMB_SIZE), "wells": thumbs}


def write_field_batch(name: str, spec: Mapping, methods: Sequence[str], rng: np.random.Generator) -> str:
    """Write ``summary.json`` and (as ``spec["thumbnails"]`` says: ``ok`` (default), ``missing``, ``broken``
    JSON, ``no-wells``: ``wells`` a list, ``bad-uri``: one map replaced by a ``javascript:`` URI)
    ``thumbnails.json``; return the summary's path."""
    summary, thumbs = field_summary(name, spec, methods, rng)
    path = Path(P.summary(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, allow_nan=False))
    mode = spec.get("thumbnails", "ok")
    if mode == "bad-uri":
        first = next(iter(thumbs["wells"].values()))
        first["maps"][methods[0]] = BAD_THUMB
    if mode == "broken":
        Path(P.thumbnails(name)).write_text('{"size": [160, 120], "wells": {"A01": ')
    elif mode == "no-wells":
        Path(P.thumbnails(name)).write_text(json.dumps({"size": [160, 120], "wells": list(thumbs["wells"].values())}))
    elif mode != "missing":
        Path(P.thumbnails(name)).write_text(json.dumps(thumbs))
    return str(path)


def make_report_inputs(
    root: Path,
    methods=("vae", "gan", "resnet50"),
    seeds: int = 1,
    gallery_size: int = 4,
    field_batches: Mapping[str, Mapping] | None = None,
    report: Mapping | None = None,
) -> dict:
    """Write every input of ``report_step`` under ``root`` (a working directory); return its keyword
    arguments, the metrics and the hostile strings.  ``field_batches``: batches of fields to add
    (name → spec, see :data:`FIELD_BATCHES`); ``report``: keys added to the config's ``report`` section."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    here = os.getcwd()
    os.chdir(root)  # the paths module's paths are relative to the working directory, as in a run
    try:
        return _make(root, [*methods, "dark_pixels"], seeds, gallery_size, dict(field_batches or {}), dict(report or {}))
    finally:
        os.chdir(here)


def _make(root: Path, methods: list[str], n_seeds: int, gallery_size: int, field_batches: dict, report: dict) -> dict:
    rng = np.random.default_rng(0)
    seeds = {m: list(range(n_seeds)) if m != "dark_pixels" else [0] for m in methods}
    # ---- test split: two shards, one image with a hostile name
    test_ids = [f"{'wormed' if k % 2 else 'no_wormed'}/img_{k:02d}.png" for k in range(16)]
    test_ids[3] = f"wormed/{HOSTILE_FILE}"
    test_dir = root / P.RESULTS / P.TEST
    halves = (slice(0, 8), slice(8, 16))
    stores, indexes = [], []
    for k, half in enumerate(halves):
        store = test_dir / "shards" / f"{k}.images.h5"
        _write_store(store, test_ids[half], TEST_LABELS[half].tolist(), rng)
        stores.append(str(store))
        indexes.append(
            str(_score_shard(test_dir, k, test_ids[half], lambda m, s, h=half: _test_scores(m, s)[h], methods, seeds, rng))
        )
    _manifest(Path(P.manifest(P.TEST)), "/data/test", test_ids)
    gather_step(P.manifest(P.TEST), stores, indexes, P.scores(P.TEST), methods=methods, shard_size=8)
    models = {m: {s: _model_sidecar(root, m, s) for s in seeds[m]} for m in methods}
    evaluate_step(
        P.scores(P.TEST), models, stores, {"n_boot": 20}, dict(PUBLISHED), gallery_size, P.METRICS_JSON, P.METRICS_CSV, P.GALLERY
    )
    # ---- batches: a normal one, an empty one, one with only quarantined files
    ok_ids = [f"img_{k}.png" for k in range(6)]
    quarantined = [(HOSTILE_FILE, HOSTILE_REASON), (ODD_FILE, "empty file")]
    batch_inputs = {
        BATCHES[0]: (ok_ids, quarantined),
        BATCHES[1]: ([], []),
        BATCHES[2]: ([], [("only/.hidden.png", "hidden file"), ("empty.png", "empty file")]),
    }
    _benchmarks(root)
    labels = np.array([0, 1, 1, 1, 1, 1])
    flagged = {"vae": 0.5, "gan": 0.6, "resnet50": 0.3, "dark_pixels": 0.5}
    for name, (ids, quarantine) in batch_inputs.items():
        coll = P.batch_collection(name)
        coll_dir = root / P.RESULTS / coll
        _manifest(Path(P.manifest(coll)), f"/data/{name}", ids, quarantine)
        stores, indexes = [], []
        if ids:
            _write_store(coll_dir / "shards" / "0.images.h5", ids, [-1] * len(ids), rng)
            stores.append(str(coll_dir / "shards" / "0.images.h5"))
            indexes.append(
                str(
                    _score_shard(
                        coll_dir, 0, ids, lambda m, s: labels * flagged[m] * 1.5, methods, {m: [0] for m in methods}, rng
                    )
                )
            )
        gather_step(P.manifest(coll), stores, indexes, P.scores(coll), methods=methods, shard_size=8, batch=name)
        summarize_batch_step(name, P.scores(coll), P.manifest(coll), {m: models[m][0] for m in methods}, 0.3, P.summary(name))
    field_rng = np.random.default_rng(1)
    field_paths = [write_field_batch(name, spec, methods, field_rng) for name, spec in field_batches.items()]
    ledger_step(
        [*(P.summary(b) for b in BATCHES), *field_paths],
        [(HOSTILE_BATCH, "unusable directory name")],
        {m: seeds[m] for m in methods},
        P.manifest(P.TEST),
        P.LEDGER_TSV,
        P.LEDGER_JSON,
    )
    config = {
        "report": {"title": TITLE, "gallery_size": gallery_size, "published_f1": dict(PUBLISHED), **report},
        "drift": {"ks_max": 0.3},
        "methods": {m: {"enabled": m in methods, "note": "<script>alert('config')</script>"} for m in ("vae", "gan", "resnet50")},
    }
    kwargs = {
        "metrics_path": str(root / P.METRICS_JSON),
        "gallery_path": str(root / P.GALLERY),
        "ledger_path": str(root / P.LEDGER_JSON),
        "methods": methods,
        "config": config,
    }
    metrics = json.loads((root / P.METRICS_JSON).read_text())
    hostile = [HOSTILE_FILE, HOSTILE_REASON, HOSTILE_BATCH]
    if any(spec.get("hostile") for spec in field_batches.values()):
        hostile += [HOSTILE_WELL, HOSTILE_FIELD_FILE, HOSTILE_FIELD_REASON]
    return {"kwargs": kwargs, "metrics": metrics, "hostile": hostile}
