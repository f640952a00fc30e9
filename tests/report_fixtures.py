"""Small synthetic inputs for the report, written with the package's own writers (well under a second).

``make_report_inputs(root, methods)`` builds, under ``root``, everything
:func:`wormflow.report.report_step` reads: test image stores and score
shards gathered into ``labeled/test/scores.h5`` (:mod:`wormflow.store`),
``eval/metrics.json`` (:func:`wormflow.evaluate.evaluate_scores` per method
plus the dark-pixel baseline), one ``model.pt`` per method
(:func:`wormflow.train.save_artifact`), three batches (a normal one with a
hostile quarantined file name, an empty one and one whose files were all
quarantined), ``batches.tsv`` and a few benchmark files.  It returns the
keyword arguments for ``report_step`` (without the outputs) and the hostile
strings used, so that tests can look for them.
"""

from __future__ import annotations

import copy
import csv
import functools
import json
from pathlib import Path

import numpy as np

from wormflow.evaluate import evaluate_scores, point_metrics, seed_summary
from wormflow.inventory import sha256_file
from wormflow.store import ImageStoreWriter, gather_scores, write_score_shard

SIZE = 16
HOSTILE_FILE = "x<img src=x onerror=alert(1)>.png"
HOSTILE_REASON = "cannot decode: <script>alert(\"reason\")</script> & 'quotes'"
TITLE = "Worm report <b>test</b>"
HOSTILE_BATCH = "bad batch<img src=x onerror=alert(2)>"
ODD_FILE = 'wörm 🪱 "q" \u202egnp.exe'
THRESHOLDS = {"vae": 0.5, "gan": 0.45, "resnet50": 0.3}
PUBLISHED = {"vae": 0.871, "gan": 0.88, "gan_mixed": 0.66, "resnet50": 0.9032}
TEST_LABELS = np.array([k % 2 for k in range(16)], dtype=np.int64)
FEATURES = {
    "vae": ["recon_error", "colour_ratio"],
    "gan": ["recon_error", "feature_error", "disc_logit", "colour_ratio"],
    "resnet50": ["logit"],
}


def _images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _write_store(path: Path, ids: list[str], labels: list[int], rng: np.random.Generator, quarantine=()) -> None:
    """An image store at two sizes (the report must pick the larger)."""
    w = ImageStoreWriter(path, sizes=[8, SIZE], rows=4, filters={}, attrs={"shard": 0})
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


def _test_scores(method: str) -> np.ndarray:
    """The test scores of ``method``: the same for any subset of methods."""
    return _scores(np.random.default_rng(sum(map(ord, method))), TEST_LABELS, method)


def _write_score_shard(path: Path, method: str, ids: list[str], scores: np.ndarray, rng: np.random.Generator) -> None:
    n = len(ids)
    cols = {
        "ids": np.array(ids, dtype=object),
        "score": scores.astype(np.float32),
        "pred": (scores >= THRESHOLDS[method]).astype(np.int8),
        "features": rng.normal(size=(n, len(FEATURES[method]))).astype(np.float32),
    }
    if method in ("vae", "gan"):
        cols["recon"] = _images(rng, n, SIZE).reshape(n, SIZE, SIZE, 3)
        cols["error_map"] = rng.integers(0, 256, (n, SIZE, SIZE), dtype=np.uint8)
        cols["colour_mask"] = rng.integers(0, 2, (n, SIZE, SIZE), dtype=np.uint8)
    attrs = {"method": method, "threshold": THRESHOLDS[method], "checkpoint_sha256": "ab" * 32, "feature_names": FEATURES[method]}
    write_score_shard(path, cols, attrs, rows=4, filters={})


def _gather(out: Path, methods, stores, score_paths, quarantine=()) -> None:
    gather_scores(
        out, methods, [str(s) for s in stores], score_paths, list(quarantine), "/data", {"batch": out.parent.name}, 4, {}
    )


@functools.cache
def _evaluated(method: str) -> dict:
    """evaluate_scores for one method (cached: scikit-learn makes it the slowest part of the fixture)."""
    if method == "dark_pixels":
        dark = np.clip(0.2 + 0.5 * TEST_LABELS + np.random.default_rng(7).normal(0, 0.1, len(TEST_LABELS)), 0, 1)
        return evaluate_scores(dark, TEST_LABELS, 0.45, n_boot=20)
    return evaluate_scores(_test_scores(method), TEST_LABELS, THRESHOLDS[method], n_boot=20)


def _seed_spread(method: str, seeds: int) -> dict:
    """``per_seed`` and ``seed_summary`` as evaluate_scores writes them, from perturbed scores."""
    rng = np.random.default_rng(11)
    runs = [np.clip(_test_scores(method) + rng.normal(0, 0.05, len(TEST_LABELS)), 0, 1) for _ in range(seeds)]
    per_seed = [point_metrics(r, TEST_LABELS, THRESHOLDS[method]) for r in runs]
    return {"per_seed": per_seed, "seed_summary": seed_summary(per_seed)}


def _metrics(methods, test_ids, seeds: int, checkpoints: dict[str, str]) -> dict:
    """metrics.json in evaluate_step's layout; with ``seeds`` > 1, seed spreads from perturbed scores."""
    labels = TEST_LABELS
    out = {}
    for m in methods:
        block = copy.deepcopy(_evaluated(m))
        if seeds > 1:
            block.update(_seed_spread(m, seeds))
        block.update(
            label=m,
            seeds=list(range(seeds)),
            threshold_rule="F1-max on dev (synthetic)",
            dev_f1=0.8,
            weights_init="random initialisation",
            checkpoint_sha256=checkpoints[m],
            train_time_s=1.5,
            epochs_run=2,
            device="cpu",
            config_hash="0123456789abcdef",
            ids=test_ids,
            scores=[round(float(v), 6) for v in _test_scores(m)],
            labels=labels.tolist(),
            published_f1=PUBLISHED.get(m),
        )
        out[m] = block
    base = copy.deepcopy(_evaluated("dark_pixels"))
    base.update(label="Dark-pixel share", seeds=[], threshold_rule="F1-max on dev", dev_f1=1.0, baseline=True, dark_level=0.6)
    out["dark_pixels"] = base
    return {
        "generated_utc": "2026-01-01T00:00:00Z",
        "package_version": "0.1.0",
        "n_test": len(labels),
        "n_boot": 20,
        "published_f1": dict(PUBLISHED),
        "methods": out,
    }


def _model(path: Path, method: str) -> None:
    from wormflow.train import ARTIFACT_FORMAT, ARTIFACT_VERSION, save_artifact

    path.parent.mkdir(parents=True, exist_ok=True)
    art = {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_VERSION,
        "method": method,
        "package_version": "0.1.0",
        "state_dict": {},
        "threshold": THRESHOLDS[method],
        "threshold_rule": "F1-max on dev (synthetic)",
        "weights_init": "random initialisation",
        "seed": 0,
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
    }
    save_artifact(path, art)


def _ledger(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, delimiter="\t", restval="")
        w.writeheader()
        w.writerows(rows)


def _benchmarks(root: Path, methods) -> None:
    def tsv(rel: str, seconds: float) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t100\n")

    for m in methods:
        tsv(f"train/{m}/seed0.tsv", 3.0)
        tsv(f"score_shard/labeled/test/0.{m}.seed0.tsv", 2.0)
        tsv(f"score_shard/batches/2026-01-01/0.{m}.seed0.tsv", 1.0)
    tsv("decode_shard/labeled/test/0.tsv", 0.5)
    tsv("gather/labeled/test.tsv", 0.25)


def make_report_inputs(root: Path, methods=("vae", "gan", "resnet50"), seeds: int = 1, gallery_size: int = 4) -> dict:
    """Write every input of ``report_step`` under ``root``; return its keyword arguments and the hostile strings."""
    root = Path(root)
    methods = list(methods)
    rng = np.random.default_rng(0)
    # ---- test split: two shards, one image with a hostile name
    test_ids = [f"{'wormed' if k % 2 else 'no_wormed'}/img_{k:02d}.png" for k in range(16)]
    test_ids[3] = f"wormed/{HOSTILE_FILE}"
    labels = TEST_LABELS
    test_dir = root / "labeled" / "test"
    stores = [test_dir / "shards" / f"{k}.images.h5" for k in range(2)]
    halves = (slice(0, 8), slice(8, 16))
    for store, half in zip(stores, halves):
        _write_store(store, test_ids[half], labels[half].tolist(), rng)
    scores = {m: _test_scores(m) for m in methods}
    shard_paths = {m: [] for m in methods}
    for m in methods:
        for k, half in enumerate(halves):
            p = test_dir / "shards" / f"{k}.{m}.seed0.h5"
            _write_score_shard(p, m, test_ids[half], scores[m][half], rng)
            shard_paths[m].append(str(p))
    _gather(test_dir / "scores.h5", methods, stores, shard_paths)
    # ---- models and metrics (which record the checkpoints' hashes)
    model_paths = [root / "models" / m / "seed0" / "model.pt" for m in methods]
    for m, p in zip(methods, model_paths):
        _model(p, m)
    (root / "eval").mkdir(parents=True, exist_ok=True)
    metrics = _metrics(methods, test_ids, seeds, {m: sha256_file(p) for m, p in zip(methods, model_paths)})
    (root / "eval" / "metrics.json").write_text(json.dumps(metrics, indent=1))
    # ---- batches: a normal one, an empty one, one with only quarantined files
    batches = ["2026-01-01", "2026-01-02", "2026-01-03"]
    bdir = root / "batches"
    ok_ids = [f"img_{k}.png" for k in range(6)]
    ok_store = bdir / batches[0] / "shards" / "0.images.h5"
    _write_store(ok_store, ok_ids, [-1] * 6, rng, quarantine=[(HOSTILE_FILE, HOSTILE_REASON), (ODD_FILE, "empty file")])
    ok_scores = {}
    for m in methods:
        p = bdir / batches[0] / "shards" / f"0.{m}.seed0.h5"
        _write_score_shard(p, m, ok_ids, _scores(rng, rng.integers(0, 2, 6), m), rng)
        ok_scores[m] = [str(p)]
    _gather(bdir / batches[0] / "scores.h5", methods, [ok_store], ok_scores)
    _gather(bdir / batches[1] / "scores.h5", methods, [], {m: [] for m in methods})
    _gather(
        bdir / batches[2] / "scores.h5",
        methods,
        [],
        {m: [] for m in methods},
        [("only/.hidden.png", "hidden file"), ("empty.png", "empty file")],
    )
    ledger = [
        {"batch": batches[0], "status": "ok", "n_files": 8, "n_scored": 6, "n_quarantined": 2, "processing_s": 4.2}
        | {f"{m}_ks": v for m, v in zip(methods, (0.12, 0.45, 0.2))}
        | {f"{m}_flagged_share": 0.5 for m in methods},
        {"batch": batches[1], "status": "empty", "n_files": 0, "n_scored": 0, "n_quarantined": 0},
        {"batch": batches[2], "status": "nothing scorable", "n_files": 2, "n_scored": 0, "n_quarantined": 2},
        {"batch": HOSTILE_BATCH, "status": "rejected: unusable directory name"},
    ]
    _ledger(root / "batches.tsv", ledger)
    _benchmarks(root / "benchmarks", methods)
    config = {
        "report": {"title": TITLE, "gallery_size": gallery_size, "published_f1": dict(PUBLISHED)},
        "drift": {"ks_max": 0.3},
        "methods": {m: {"enabled": m in methods, "note": "<script>alert('config')</script>"} for m in ("vae", "gan", "resnet50")},
    }
    kwargs = {
        "metrics_path": str(root / "eval" / "metrics.json"),
        "ledger_path": str(root / "batches.tsv"),
        "test_scores_path": str(test_dir / "scores.h5"),
        "test_store_paths": [str(s) for s in stores],
        "batch_scores_paths": [str(bdir / b / "scores.h5") for b in batches],
        "batches": batches,
        "rejected_batches": [HOSTILE_BATCH],
        "model_paths": [str(p) for p in model_paths],
        "methods": methods,
        "config": config,
        "benchmarks_root": str(root / "benchmarks"),
    }
    return {"kwargs": kwargs, "metrics": metrics, "hostile": [HOSTILE_FILE, HOSTILE_REASON, HOSTILE_BATCH]}
