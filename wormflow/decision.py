"""From features to a score, and from a score to a decision.

* :class:`Combiner` turns an anomaly method's per-image features
  (reconstruction error, colour ratio, discriminator outputs) into one score,
  ``P(wormed)``, by a logistic regression on standardised features fitted on
  the dev split.  Its parameters are plain numbers stored in the checkpoint.
* :func:`choose_threshold` picks the F1-maximising threshold on the dev split;
  it travels in the checkpoint and is used unchanged at scoring time.  For
  the anomaly methods the dev split also fits the combiner, so the threshold
  is chosen on *out-of-fold* combined scores (:func:`cross_validated_scores`,
  stratified 5-fold): in-sample scores of a logistic fit on ~50 images are
  optimistic and put the threshold where it does not generalise.

**One-class dev split.** With only one class in the dev labels neither an F1
optimum nor a logistic fit exists (an F1 argmax would pick the lowest score
and flag everything).  Then, with a warning:

* the combiner uses the first feature (the reconstruction error) alone,
  standardised on the dev split, with the sign the training assumption
  gives (the models are trained on worm images, so a larger error means
  *less* worm-like): ``score = sigmoid(-(e - mean) / sd)``;
* the threshold is set so that 95 % of the dev images receive their known
  class: the 5th percentile of the dev scores when every dev image is
  ``wormed``, the 95th when none is.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

log = logging.getLogger(__name__)

ONE_CLASS_COVERAGE = 0.95
RESNET_GRID = tuple(np.round(np.linspace(0.1, 0.9, 81), 4).tolist())


@dataclass
class ThresholdChoice:
    threshold: float
    dev_f1: float
    rule: str


def f1_at(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """F1 of ``scores >= t`` against ``labels`` for every ``t`` (vectorised)."""
    scores = np.asarray(scores, dtype=np.float64)[None, :]
    labels = np.asarray(labels).astype(bool)[None, :]
    pred = scores >= np.asarray(thresholds, dtype=np.float64)[:, None]
    tp = (pred & labels).sum(1)
    fp = (pred & ~labels).sum(1)
    fn = (~pred & labels).sum(1)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def midpoints(scores: np.ndarray) -> np.ndarray:
    """Candidate thresholds over the observed range: the midpoints between sorted unique scores, plus both ends."""
    u = np.unique(np.asarray(scores, dtype=np.float64))
    if u.size == 1:
        return u
    return np.concatenate([u[:1], (u[:-1] + u[1:]) / 2, u[-1:]])


def choose_threshold(scores, labels, grid=None) -> ThresholdChoice:
    """The F1-maximising threshold on the dev split (see module doc for the one-class rule).

    ``grid`` gives the candidates (the report's 0.1–0.9 grid for ResNet
    probabilities); by default, the midpoints of the observed scores.  Among
    thresholds tied at the best F1 the median one is taken.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if scores.size == 0:
        raise ValueError("cannot choose a threshold without dev scores")
    classes = np.unique(labels)
    if classes.size < 2:
        return _one_class_threshold(scores, int(classes[0]))
    candidates = np.asarray(grid if grid is not None else midpoints(scores), dtype=np.float64)
    f1 = f1_at(scores, labels, candidates)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    t = float(candidates[best[len(best) // 2]])
    source = "grid 0.1–0.9" if grid is not None else "observed dev scores"
    return ThresholdChoice(t, float(f1.max()), f"F1-max on dev ({source})")


def _one_class_threshold(scores: np.ndarray, cls: int) -> ThresholdChoice:
    q = 1 - ONE_CLASS_COVERAGE if cls == 1 else ONE_CLASS_COVERAGE
    t = float(np.quantile(scores, q))
    if cls == 0:
        t = float(np.nextafter(t, np.inf))  # scores equal to the quantile stay negative
    name = "wormed" if cls == 1 else "no_wormed"
    log.warning(
        "dev split has only %s images: no F1 optimum exists; threshold set to the %g%% quantile of the dev scores "
        "so that %d%% of dev images keep their class",
        name,
        100 * q,
        round(100 * ONE_CLASS_COVERAGE),
    )
    return ThresholdChoice(t, float("nan"), f"one-class dev ({name} only): {100 * q:g}% quantile of dev scores")


@dataclass
class Combiner:
    """Logistic combination of standardised features: ``score = sigmoid(w · (f - mean) / scale + b)``."""

    names: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    rule: str = "logistic regression on dev"
    log_features: list[bool] = field(default_factory=list)

    def transform(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features, dtype=np.float64).copy()
        for j, use_log in enumerate(self.log_features):
            if use_log:
                f[:, j] = np.log(np.maximum(f[:, j], 1e-12))
        return (f - np.asarray(self.mean)) / np.asarray(self.scale)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        z = self.transform(features) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Combiner:
        return cls(**d)


def fit_combiner(
    features: np.ndarray, labels: np.ndarray, names: list[str], log_features: list[bool], c: float = 1.0
) -> Combiner:
    """Fit the feature combination on the dev split (one-class fallback in the module doc)."""
    from sklearn.linear_model import LogisticRegression

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    proto = Combiner(names, [0.0] * len(names), [1.0] * len(names), [0.0] * len(names), 0.0, log_features=list(log_features))
    z = proto.transform(features)
    mean = z.mean(0)
    scale = np.where(z.std(0) > 1e-12, z.std(0), 1.0)
    base = Combiner(names, mean.tolist(), scale.tolist(), [0.0] * len(names), 0.0, log_features=list(log_features))
    if np.unique(labels).size < 2:
        log.warning("dev split has one class only: the score uses the reconstruction error alone (see wormflow.decision)")
        coef = [0.0] * len(names)
        coef[0] = -1.0
        base.coef, base.rule = coef, "one-class dev: -standardised reconstruction error"
        return base
    lr = LogisticRegression(C=c, max_iter=1000)
    lr.fit(base.transform(features), labels)
    base.coef = lr.coef_[0].astype(float).tolist()
    base.intercept = float(lr.intercept_[0])
    return base


def cross_validated_scores(
    features: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    log_features: list[bool],
    c: float = 1.0,
    folds: int = 5,
    seed: int = 0,
) -> np.ndarray | None:
    """Out-of-fold combined scores on dev (each image scored by a combiner fitted without it).

    ``None`` when a class has fewer than two images (no cross-validation possible).
    """
    from sklearn.model_selection import StratifiedKFold

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=2)
    k = int(min(folds, counts.min()))
    if k < 2:
        return None
    out = np.zeros(len(labels))
    for train_idx, test_idx in StratifiedKFold(k, shuffle=True, random_state=seed).split(features, labels):
        comb = fit_combiner(features[train_idx], labels[train_idx], names, log_features, c)
        out[test_idx] = comb(features[test_idx])
    return out
