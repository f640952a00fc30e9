"""Thresholds chosen on dev and the metrics of pixels, tiles and wells.

:func:`choose_threshold` is the workflow's one threshold chooser
(:func:`wormflow.decision.choose_threshold`, where the two rules are
described) for tile and pixel scores (``score >= threshold`` → worm), with
this module's defaults: the ``"robust"`` rule, and, for large inputs
(pixels), at most ``max_n`` scores (a deterministic random subset) and
``max_candidates`` candidate thresholds.  Unlike the patch methods' chooser it
refuses a dev set with one class only (a field without any worm on dev says
nothing about where a threshold belongs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from .. import decision

MAX_N = 50_000
MAX_CANDIDATES = 2_000
N_BOOT = decision.N_BOOT
f1_at = decision.f1_sorted  # F1 of ``score >= t`` for every ``t``, from the sorted positive and negative scores


@dataclass
class Threshold:
    value: float
    rule: str  # "f1max", "gap midpoint" or "bootstrap-mean F1"
    dev_f1: float  # F1 at ``value`` on the (subsampled) dev scores
    separated: bool  # the dev classes separate
    n: int  # dev scores used

    def to_dict(self) -> dict:
        return asdict(self)


def subsample(n: int, max_n: int = MAX_N, seed: int = 0) -> np.ndarray:
    """Sorted indices of a deterministic random subset of ``range(n)`` of size ``min(n, max_n)``."""
    return decision.subsample(n, max_n, seed)


def _validated(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1 (drop ambiguous samples first)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s, y.astype(bool)


def candidates(scores: np.ndarray, max_candidates: int = MAX_CANDIDATES) -> np.ndarray:
    """Candidate thresholds: both extremes and the midpoints between consecutive distinct scores (at most
    ``max_candidates``, evenly spaced by rank)."""
    return decision.midpoints(scores, max_candidates)


def choose_threshold(
    scores, labels, rule: str = "robust", *, n_boot: int = N_BOOT, seed: int = 0, max_n: int = MAX_N
) -> Threshold:
    """A threshold for ``scores`` (higher = worm) from dev ``labels`` (0/1) by ``rule`` ("robust" or "f1max")."""
    if rule not in decision.THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}")
    s, y = _validated(scores, labels)
    if y.all() or not y.any():
        raise ValueError("choosing a threshold needs both classes on dev")
    c = decision.choose_threshold(s, y, None, rule, n_boot=n_boot, seed=seed, max_n=max_n, max_candidates=MAX_CANDIDATES)
    return Threshold(c.threshold, c.kind, c.dev_f1, c.separated, c.n)


def ranking_metrics(scores, labels) -> dict:
    """AUROC and average precision (scikit-learn); NaN when a class is absent."""
    s, y = _validated(scores, labels)
    if y.all() or not y.any():
        return {"auroc": float("nan"), "ap": float("nan")}
    return {"auroc": float(roc_auc_score(y, s)), "ap": float(average_precision_score(y, s))}


def counts(pred, truth) -> tuple[int, int, int]:
    """``(tp, fp, fn)`` of two bool arrays."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    return int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())


def overlap(tp: int, fp: int, fn: int) -> dict:
    """F1 (= Dice), precision, recall and IoU from counts; Dice and IoU are 1 when both sets are empty."""
    d = 2 * tp + fp + fn
    return {
        "f1": 2 * tp / d if d else 1.0,
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "iou": tp / (tp + fp + fn) if d else 1.0,
    }


def agreement(estimate, truth) -> dict:
    """Pearson r and mean absolute error of per-well estimates against the truth."""
    e, t = np.asarray(estimate, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    r = float(np.corrcoef(e, t)[0, 1]) if e.size > 1 and e.std() > 0 and t.std() > 0 else float("nan")
    return {"pearson_r": r, "mae": float(np.abs(e - t).mean()) if e.size else float("nan")}
