"""Thresholds chosen on dev and the metrics of pixels, tiles and wells.

:func:`choose_threshold` is one function for patch, tile and pixel scores
(``score >= threshold`` → worm).  Two rules:

* ``"f1max"``: the F1-maximising candidate on dev (the median of tied ones);
* ``"robust"`` (default): when the dev classes separate (every negative below
  every positive) the middle of the gap, ``(max(neg) + min(pos)) / 2``, which
  F1-max would place at an arbitrary point inside the gap; otherwise the
  candidate maximising the F1 *averaged over bootstrap resamples* of dev
  (stratified: positives and negatives resampled separately, ``n_boot``
  times, seeded), which favours a threshold on a broad plateau over a spike
  a few dev samples happen to produce.

Candidates are the midpoints between consecutive distinct dev scores plus
both extremes; beyond ``max_candidates`` of them, an evenly spaced (by rank)
subset.  Large inputs (pixels) are first subsampled to ``max_n`` scores,
deterministically (``numpy.random.default_rng(seed)``, without replacement);
whether the classes separate, and the gap, are judged on all the scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

MAX_N = 50_000
MAX_CANDIDATES = 2_000
N_BOOT = 200


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
    if n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))


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


def f1_at(pos_sorted: np.ndarray, neg_sorted: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """F1 of ``score >= t`` for every ``t``, from the sorted positive and negative scores."""
    tp = pos_sorted.size - np.searchsorted(pos_sorted, thresholds, "left")
    fp = neg_sorted.size - np.searchsorted(neg_sorted, thresholds, "left")
    fn = pos_sorted.size - tp
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def candidates(scores: np.ndarray, max_candidates: int = MAX_CANDIDATES) -> np.ndarray:
    """Candidate thresholds: both extremes and the midpoints between consecutive distinct scores (at most
    ``max_candidates``, evenly spaced by rank)."""
    u = np.unique(scores)
    c = u if u.size == 1 else np.concatenate([u[:1], (u[:-1] + u[1:]) / 2, u[-1:]])
    if c.size > max_candidates:
        c = np.unique(c[np.linspace(0, c.size - 1, max_candidates).round().astype(int)])
    return c


def _median_argmax(f1: np.ndarray) -> int:
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return int(best[len(best) // 2])


def choose_threshold(
    scores, labels, rule: str = "robust", *, n_boot: int = N_BOOT, seed: int = 0, max_n: int = MAX_N
) -> Threshold:
    """A threshold for ``scores`` (higher = worm) from dev ``labels`` (0/1) by ``rule`` ("robust" or "f1max")."""
    if rule not in ("robust", "f1max"):
        raise ValueError(f"unknown threshold rule {rule!r}")
    s, y = _validated(scores, labels)
    if y.all() or not y.any():
        raise ValueError("choosing a threshold needs both classes on dev")
    lowest_pos, highest_neg = s[y].min(), s[~y].max()  # on all scores, before any subsampling
    separated = bool(highest_neg < lowest_pos)
    if s.size > max_n:
        keep = subsample(s.size, max_n, seed)
        s, y = s[keep], y[keep]
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"a class vanished when subsampling {max_n} of the dev scores; raise max_n")
    cands = candidates(s)
    if rule == "f1max":
        f1 = f1_at(pos, neg, cands)
        t, name = float(cands[_median_argmax(f1)]), "f1max"
    elif separated:
        t, name = float((highest_neg + lowest_pos) / 2), "gap midpoint"
    else:
        rng = np.random.default_rng(seed)
        mean_f1 = np.zeros(cands.size)
        for _ in range(n_boot):
            bp = np.sort(pos[rng.integers(0, pos.size, pos.size)])
            bn = np.sort(neg[rng.integers(0, neg.size, neg.size)])
            mean_f1 += f1_at(bp, bn, cands)
        t, name = float(cands[_median_argmax(mean_f1)]), "bootstrap-mean F1"
    return Threshold(t, name, float(f1_at(pos, neg, np.array([t]))[0]), separated, int(s.size))


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
