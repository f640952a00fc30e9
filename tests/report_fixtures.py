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
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from wormflow import paths as P
from wormflow.evaluate import evaluate_step
from wormflow.inventory import Entry, Manifest
from wormflow.ledger import ledger_step, summarize_batch_step
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


def make_report_inputs(root: Path, methods=("vae", "gan", "resnet50"), seeds: int = 1, gallery_size: int = 4) -> dict:
    """Write every input of ``report_step`` under ``root`` (a working directory); return its keyword
    arguments, the metrics and the hostile strings."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    here = os.getcwd()
    os.chdir(root)  # the paths module's paths are relative to the working directory, as in a run
    try:
        return _make(root, [*methods, "dark_pixels"], seeds, gallery_size)
    finally:
        os.chdir(here)


def _make(root: Path, methods: list[str], n_seeds: int, gallery_size: int) -> dict:
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
    ledger_step(
        [P.summary(b) for b in BATCHES],
        [(HOSTILE_BATCH, "unusable directory name")],
        {m: seeds[m] for m in methods},
        P.manifest(P.TEST),
        P.LEDGER_TSV,
        P.LEDGER_JSON,
    )
    config = {
        "report": {"title": TITLE, "gallery_size": gallery_size, "published_f1": dict(PUBLISHED)},
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
    return {"kwargs": kwargs, "metrics": metrics, "hostile": [HOSTILE_FILE, HOSTILE_REASON, HOSTILE_BATCH]}
