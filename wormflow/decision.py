"""From features to a score, and from a score to a decision.

* :class:`Combiner` turns an anomaly method's per-image features
  (reconstruction error, colour ratio, discriminator outputs) into one score,
  ``P(wormed)``, by a logistic regression on standardised features fitted on
  the dev split.  Its parameters are plain numbers stored in the checkpoint.
* :func:`choose_threshold` picks the threshold on the dev split; it travels in
  the checkpoint and is used unchanged at scoring time.  For the anomaly
  methods the dev split also fits the combiner, so the threshold is chosen on
  *out-of-fold* combined scores (:func:`cross_validated_scores`, stratified
  5-fold): in-sample scores of a logistic fit on ~50 images are optimistic and
  put the threshold where it does not generalise.

**One chooser, two rules** (``rule``; the workflow's comes from the config key
``calibration.threshold_rule``).  The same function chooses the thresholds of
patches (every method), tiles and pixels (:mod:`wormflow.fields.metrics`):

* ``"f1max"``: the F1-maximising candidate on dev (the median of tied ones).
  When the dev classes separate, *every* candidate inside the gap between them
  has F1 1, and the median one can sit near either edge of the gap: a test
  image just beyond the dev extremes is then misclassified.
* ``"robust"``: when the dev classes separate (every negative below every
  positive) the middle of the gap, ``(max(neg) + min(pos)) / 2``; otherwise the
  candidate maximising the F1 *averaged over bootstrap resamples* of dev
  (stratified: positives and negatives resampled separately, ``n_boot`` times,
  ``numpy.random.default_rng(seed)``: deterministic), which favours a threshold
  on a broad plateau over a spike a few dev images happen to produce.

Candidates are the midpoints between consecutive distinct dev scores plus both
extremes, or ``grid`` when given (the report's 0.1–0.9 grid for ResNet-50
probabilities): with a grid both rules pick a grid point — the robust rule the
grid point inside the gap nearest to its middle (the bootstrap rule when no
grid point lies inside).  For large inputs (pixels) ``max_n`` subsamples the
scores deterministically and ``max_candidates`` thins the candidates (evenly by
rank); whether the classes separate, and the gap, are judged on all scores.

**One-class dev split.** With only one class in the dev labels neither an F1
optimum nor a logistic fit exists (an F1 argmax would pick the lowest score
and flag everything).  Then, with a warning, whatever the rule:

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

log = logging.getLogger(__name__)

ONE_CLASS_COVERAGE = 0.95
RESNET_GRID = tuple(np.round(np.linspace(0.1, 0.9, 81), 4).tolist())
THRESHOLD_RULES = ("robust", "f1max")
DEFAULT_THRESHOLD_RULE = "robust"  # the workflow's default (config.yaml calibration.threshold_rule)
N_BOOT = 200


@dataclass
class ThresholdChoice:
    threshold: float
    dev_f1: float  # F1 at ``threshold`` on the dev scores used (subsampled ones when ``max_n`` applied)
    rule: str  # what was done, in words (stored in the model as ``threshold_rule``)
    kind: str = "f1max"  # "f1max", "gap midpoint", "bootstrap-mean F1" or "one-class"
    separated: bool = False  # the dev classes separate (every negative below every positive)
    n: int = 0  # dev scores used


def f1_at(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """F1 of ``scores >= t`` against ``labels`` for every ``t`` (vectorised)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    return f1_sorted(np.sort(scores[labels]), np.sort(scores[~labels]), np.asarray(thresholds, dtype=np.float64))


def f1_sorted(pos_sorted: np.ndarray, neg_sorted: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """F1 of ``score >= t`` for every ``t``, from the sorted positive and negative scores (O((N + T) log N))."""
    tp = pos_sorted.size - np.searchsorted(pos_sorted, thresholds, "left")
    fp = neg_sorted.size - np.searchsorted(neg_sorted, thresholds, "left")
    fn = pos_sorted.size - tp
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def midpoints(scores: np.ndarray, max_candidates: int | None = None) -> np.ndarray:
    """Candidate thresholds over the observed range: the midpoints between sorted unique scores, plus both ends
    (at most ``max_candidates`` of them, evenly spaced by rank, when given)."""
    u = np.unique(np.asarray(scores, dtype=np.float64))
    c = u if u.size == 1 else np.concatenate([u[:1], (u[:-1] + u[1:]) / 2, u[-1:]])
    if max_candidates is not None and c.size > max_candidates:
        c = np.unique(c[np.linspace(0, c.size - 1, max_candidates).round().astype(int)])
    return c


def subsample(n: int, max_n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a deterministic random subset of ``range(n)`` of size ``min(n, max_n)``."""
    if n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))


def _median_argmax(f1: np.ndarray) -> int:
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return int(best[len(best) // 2])


def bootstrap_f1_sum(pos: np.ndarray, neg: np.ndarray, candidates: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """F1 of every candidate summed over ``n_boot`` stratified bootstrap resamples of (``pos``, ``neg``)
    (divide by ``n_boot`` for the mean; the argmax is taken on the sum)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    total = np.zeros(candidates.size)
    for _ in range(n_boot):
        bp = np.sort(pos[rng.integers(0, pos.size, pos.size)])
        bn = np.sort(neg[rng.integers(0, neg.size, neg.size)])
        total += f1_sorted(bp, bn, candidates)
    return total


def choose_threshold(
    scores,
    labels,
    grid: Sequence[float] | None = None,
    rule: str = "f1max",
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    max_n: int | None = None,
    max_candidates: int | None = None,
) -> ThresholdChoice:
    """The dev threshold of ``scores`` (higher = wormed) by ``rule`` (module doc; one-class rule there too).

    ``grid`` gives the candidates (the report's 0.1–0.9 grid for ResNet probabilities); by default,
    the midpoints of the observed scores.  Among thresholds tied at the best (mean) F1 the median one
    is taken.  The function's default rule is ``"f1max"`` (the in-sample optimum, as before the rule
    existed); the workflow passes the configured one.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r} (known: {', '.join(THRESHOLD_RULES)})")
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if scores.size == 0:
        raise ValueError("cannot choose a threshold without dev scores")
    classes = np.unique(labels)
    if classes.size < 2:
        return _one_class_threshold(scores, int(classes[0]))
    y = labels.astype(bool)
    lowest_pos, highest_neg = float(scores[y].min()), float(scores[~y].max())  # on all scores, before any subsampling
    separated = highest_neg < lowest_pos
    if max_n is not None and scores.size > max_n:
        keep = subsample(scores.size, max_n, seed)
        scores, y = scores[keep], y[keep]
    pos, neg = np.sort(scores[y]), np.sort(scores[~y])
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"a class vanished when subsampling {max_n} of the dev scores; raise max_n")
    candidates = np.asarray(grid, dtype=np.float64) if grid is not None else midpoints(scores, max_candidates)
    source = "grid 0.1–0.9" if grid is not None else "observed dev scores"
    t, kind = None, "f1max"
    if rule == "f1max":
        t = float(candidates[_median_argmax(f1_sorted(pos, neg, candidates))])
        text = f"F1-max on dev ({source})"
    elif separated:
        mid = (highest_neg + lowest_pos) / 2
        if not highest_neg < mid <= lowest_pos:  # adjacent floats: the midpoint rounds onto the negative
            mid = lowest_pos
        if grid is None:
            t = mid
        else:
            inside = candidates[(candidates > highest_neg) & (candidates <= lowest_pos)]
            t = float(inside[np.argmin(np.abs(inside - mid))]) if inside.size else None
        kind, text = "gap midpoint", f"robust: middle of the dev gap between the classes ({source})"
    if t is None:  # robust, classes overlap (or no grid point inside the gap)
        t = float(candidates[_median_argmax(bootstrap_f1_sum(pos, neg, candidates, n_boot, seed))])
        kind = "bootstrap-mean F1"
        text = f"robust: F1-max averaged over {n_boot} stratified bootstrap resamples of dev (seed {seed}; {source})"
    dev_f1 = float(f1_sorted(pos, neg, np.array([t]))[0])
    return ThresholdChoice(t, dev_f1, text, kind, bool(separated), int(scores.size))


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
    rule = f"one-class dev ({name} only): {100 * q:g}% quantile of dev scores"
    return ThresholdChoice(t, float("nan"), rule, "one-class", False, int(scores.size))


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
