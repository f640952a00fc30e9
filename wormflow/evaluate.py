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


def method_display(name: str) -> dict:
    """How the report shows a method (from its module): label, colour, floor or not, gallery maps."""
    from .methods import get

    m = get(name)
    return {
        "label": m.label,
        "short": m.short or m.name,
        "colour": m.colour,
        "baseline": m.baseline,
        "gallery": [[g.name, g.title, g.kind] for g in m.gallery],
    }


def _method_block(method: str, test, model_paths: dict, n_boot: int) -> dict:
    """Metrics of one method on the gathered test scores (all seeds), with its model's provenance."""
    from .artifact import read_sidecar
    from .methods import spec

    labels = test.labels.astype(int)
    scores = test.score[method]
    threshold = test.threshold[method]
    seed_scores = None
    if method in test.seed_scores:
        values, thresholds = test.seed_scores[method]
        seed_scores = [(values[:, j].astype(np.float64), thresholds[j]) for j in range(values.shape[1])]
    block = evaluate_scores(scores, labels, threshold, n_boot=n_boot, seed_scores=seed_scores)
    seeds = list(model_paths)
    model = {k: v for k, v in (read_sidecar(model_paths[seeds[0]]) or {}).items() if k not in ("dev_scores", "dev_labels")}
    display = method_display(method)
    block.update(
        display=display,
        baseline=display["baseline"],
        label=display["label"],
        seeds=[int(s) for s in seeds] if spec(method).seeded else [],
        threshold_rule=test.method_attrs[method].get("threshold_rule", model.get("threshold_rule", "")),
        dev_f1=model.get("dev_f1"),
        weights_init=test.method_attrs[method].get("weights_init", model.get("weights_init")),
        checkpoint_sha256=test.method_attrs[method].get("checkpoint_sha256"),
        train_time_s=model.get("train_time_s"),
        epochs_run=model.get("epochs_run"),
        device=model.get("device"),
        config_hash=test.method_attrs[method].get("config_hash", model.get("config_hash")),
        model={"path": str(model_paths[seeds[0]]), **model},
        ids=list(test.ids),
        scores=[round(float(v), 6) for v in scores],
        labels=labels.tolist(),
    )
    return block


def evaluate_step(
    test_scores: str,
    model_paths: dict[str, dict],
    test_stores: list[str],
    evaluation: dict,
    published: dict,
    gallery_size: int,
    out_json: str,
    out_csv: str,
    out_gallery: str,
) -> dict:
    """Evaluate every method (all seeds; the floor among them) on the gathered test scores.

    Writes ``metrics.json`` (numbers, curves, display and provenance of each method: what the
    report shows), ``metrics.csv`` and ``gallery.h5`` (the misses and hits the report shows, with
    their images and maps).
    """
    import csv
    import io
    import json

    from . import __version__
    from .atomic import atomic_write_text
    from .gallery import write_gallery
    from .scorefile import read_score_file
    from .store import reading, utc_now

    with reading(test_scores):
        test = read_score_file(test_scores, list(model_paths))
    n_boot = evaluation["n_boot"]
    methods = {m: _method_block(m, test, model_paths[m], n_boot) for m in model_paths if m in test.score}
    for m, block in methods.items():
        block["published_f1"] = published.get(m)
    result = {
        "generated_utc": utc_now(),
        "package_version": __version__,
        "n_test": len(test.ids),
        "n_boot": n_boot,
        "published_f1": published,
        "methods": methods,
        "test_quarantine": test.quarantine,
    }
    write_gallery(out_gallery, test, test_stores, {m: b["display"] for m, b in methods.items()}, gallery_size)
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
