"""Evaluation on the labeled test split: metrics, bootstrap intervals, curves.

Per method, at the threshold stored in the model (chosen on dev, never on
test): F1, precision, recall, accuracy, AUROC, average precision and the
confusion matrix, with 95 % percentile-bootstrap intervals (resampling the
test images with replacement, ``n_boot`` times, seeded).  With several
training seeds, the mean ± sd over seeds is reported beside the primary
seed's numbers.  scikit-learn computes every metric.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

METRICS = ("f1", "precision", "recall", "accuracy", "auroc", "average_precision")


def point_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """All metrics at one threshold (``score >= threshold`` → wormed)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    pred = (scores >= threshold).astype(int)
    both = np.unique(labels).size == 2
    return {
        "f1": float(f1_score(labels, pred, zero_division=0)),
        "precision": float(precision_score(labels, pred, zero_division=0)),
        "recall": float(recall_score(labels, pred, zero_division=0)),
        "accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
        "auroc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "average_precision": float(average_precision_score(labels, scores)) if both else float("nan"),
    }


def bootstrap_intervals(scores, labels, threshold: float, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap intervals for every metric (resamples lacking a class are skipped for AUROC/AP)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    n = len(labels)
    if n == 0:
        return {m: [float("nan"), float("nan")] for m in METRICS}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        values = point_metrics(scores[idx], labels[idx], threshold)
        for m, v in values.items():
            if np.isfinite(v):
                samples[m].append(v)
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return {
        m: [float(np.quantile(v, lo)), float(np.quantile(v, hi))] if v else [float("nan"), float("nan")]
        for m, v in samples.items()
    }


def curves(scores, labels, threshold_grid: np.ndarray | None = None) -> dict:
    """ROC, PR and F1/precision/recall-against-threshold curves (lists, for JSON and plots)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    out: dict = {}
    if np.unique(labels).size == 2:
        fpr, tpr, _ = roc_curve(labels, scores)
        prec, rec, _ = precision_recall_curve(labels, scores)
        out["roc"] = {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist()}
        out["pr"] = {"precision": prec.round(5).tolist(), "recall": rec.round(5).tolist()}
    if threshold_grid is None:
        lo, hi = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
        threshold_grid = np.linspace(lo, hi, 101)
    sweep = {"threshold": [], "f1": [], "precision": [], "recall": []}
    for t in threshold_grid:
        m = point_metrics(scores, labels, float(t))
        sweep["threshold"].append(round(float(t), 6))
        for k in ("f1", "precision", "recall"):
            sweep[k].append(round(m[k], 5))
    out["threshold_sweep"] = sweep
    return out


def histogram(scores, labels, bins: int = 30) -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    lo, hi = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, bins + 1)
    return {
        "edges": edges.round(6).tolist(),
        "no_wormed": np.histogram(scores[labels == 0], edges)[0].tolist(),
        "wormed": np.histogram(scores[labels == 1], edges)[0].tolist(),
    }


def seed_summary(per_seed: list[dict]) -> dict:
    """Mean and sample standard deviation over seeds for every metric."""
    out = {}
    for m in METRICS:
        v = np.array([d[m] for d in per_seed if np.isfinite(d[m])], dtype=np.float64)
        out[m] = {
            "mean": float(v.mean()) if v.size else float("nan"),
            "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "n": int(v.size),
        }
    return out


def evaluate_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    seed_scores: list[tuple[np.ndarray, float]] | None = None,
) -> dict:
    """The evaluation block of one method: metrics, intervals, confusion matrix, curves, seed spread."""
    labels = np.asarray(labels).astype(int)
    pred = (np.asarray(scores) >= threshold).astype(int)
    cm = confusion_matrix(labels, pred, labels=[0, 1])
    block = {
        "n_test": int(len(labels)),
        "n_wormed": int(labels.sum()),
        "threshold": float(threshold),
        "metrics": point_metrics(scores, labels, threshold),
        "intervals": bootstrap_intervals(scores, labels, threshold, n_boot=n_boot, seed=seed),
        "confusion_matrix": cm.astype(int).tolist(),
        "curves": curves(scores, labels),
        "histogram": histogram(scores, labels),
    }
    if seed_scores:
        per_seed = [point_metrics(s, labels, t) for s, t in seed_scores]
        block["per_seed"] = per_seed
        block["seed_summary"] = seed_summary(per_seed)
    return block


# --------------------------------------------------------------------------- the workflow step

METHOD_LABELS = {
    "vae": "VAE + colour heuristic",
    "gan": "DCGAN + f-AnoGAN encoder",
    "resnet50": "ResNet-50 + focal loss",
}


def _read_seed_scores(paths: list[str]) -> tuple[list[str], np.ndarray]:
    from .store import open_complete, read_strings

    ids: list[str] = []
    scores: list[np.ndarray] = []
    for p in paths:
        with open_complete(p, "wormflow-scores") as f:
            ids += read_strings(f["ids"])
            scores.append(f["score"][()])
    return ids, (np.concatenate(scores).astype(np.float64) if scores else np.zeros(0))


def _store_images(paths: list[str], size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    from .store import ImageStore

    ids, labels, images = [], [], []
    for p in paths:
        s = ImageStore.open(p)
        ids += s.ids
        labels.append(s.labels)
        images.append(s.images(size))
    if not images:
        return [], np.zeros(0, int), np.zeros((0, size, size, 3), np.uint8)
    return ids, np.concatenate(labels).astype(int), np.concatenate(images)


def _method_block(method: str, seed_paths: dict, model_paths: dict, test_ids, test_labels, n_boot: int) -> dict:
    from .artifact import load_artifact
    from .inventory import sha256_file as file_sha256

    label_of = dict(zip(test_ids, test_labels))
    seeds = list(seed_paths)
    runs = []
    for s in seeds:
        ids, scores = _read_seed_scores(seed_paths[s])
        art = load_artifact(model_paths[s])
        runs.append((ids, scores, art))
    ids, scores, art = runs[0]
    labels = np.array([label_of[i] for i in ids], dtype=int)
    seed_scores = [(r[1], float(r[2]["threshold"])) for r in runs] if len(runs) > 1 else None
    block = evaluate_scores(scores, labels, float(art["threshold"]), n_boot=n_boot, seed_scores=seed_scores)
    block.update(
        label=METHOD_LABELS[method],
        seeds=[int(s) for s in seeds],
        threshold_rule=art["threshold_rule"],
        dev_f1=art["dev_f1"],
        weights_init=art["weights_init"],
        checkpoint_sha256=file_sha256(model_paths[seeds[0]]),
        train_time_s=art["train_time_s"],
        epochs_run=art["epochs_run"],
        device=art["device"],
        config_hash=art["config_hash"],
        ids=ids,
        scores=[round(float(v), 6) for v in scores],
        labels=labels.tolist(),
    )
    return block


def _baseline_block(dev_stores, test_stores, size: int, level: float, n_boot: int) -> dict:
    from .baseline import LABEL, dark_share
    from .decision import choose_threshold

    _, dev_labels, dev_images = _store_images(dev_stores, size)
    ids, test_labels, test_images = _store_images(test_stores, size)
    choice = choose_threshold(dark_share(dev_images, level), dev_labels)
    scores = dark_share(test_images, level)
    block = evaluate_scores(scores, test_labels, choice.threshold, n_boot=n_boot)
    block.update(label=LABEL, seeds=[], threshold_rule=choice.rule, dev_f1=choice.dev_f1, baseline=True, dark_level=level)
    return block


def evaluate_step(
    seed_score_map: dict,
    model_map: dict,
    dev_stores: list[str],
    test_stores: list[str],
    evaluation: dict,
    published: dict,
    out_json: str,
    out_csv: str,
) -> dict:
    """Evaluate every method (all seeds) and the baseline on the test split; write JSON and CSV."""
    import csv
    import io
    import json

    from . import __version__
    from .atomic import atomic_write_text
    from .baseline import NAME as BASELINE
    from .store import utc_now

    test_ids, test_labels, _ = _store_images(test_stores, evaluation["baseline_image_size"])
    n_boot = evaluation["n_boot"]
    methods = {m: _method_block(m, seed_score_map[m], model_map[m], test_ids, test_labels, n_boot) for m in seed_score_map}
    for m, block in methods.items():
        block["published_f1"] = published.get(m)
    methods[BASELINE] = _baseline_block(
        dev_stores, test_stores, evaluation["baseline_image_size"], evaluation["baseline_dark_level"], n_boot
    )
    result = {
        "generated_utc": utc_now(),
        "package_version": __version__,
        "n_test": len(test_ids),
        "n_boot": n_boot,
        "published_f1": published,
        "methods": methods,
    }
    atomic_write_text(out_json, json.dumps(result, indent=1, allow_nan=True))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "metric", "value", "ci_low", "ci_high", "seed_mean", "seed_sd", "n_seeds", "threshold"])
    for m, block in methods.items():
        summary = block.get("seed_summary", {})
        for metric in METRICS:
            s = summary.get(metric, {})
            lo, hi = block["intervals"][metric]
            w.writerow(
                [
                    m,
                    metric,
                    block["metrics"][metric],
                    lo,
                    hi,
                    s.get("mean", ""),
                    s.get("sd", ""),
                    s.get("n", ""),
                    block["threshold"],
                ]
            )
    atomic_write_text(out_csv, buf.getvalue())
    return result
