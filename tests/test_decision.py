"""The one threshold chooser (wormflow.decision.choose_threshold): rules f1max and robust, grids, one class,
and how the configured rule reaches a trained model and the ledger."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from wormflow import decision
from wormflow import fields as F
from wormflow.data import LabeledImages
from wormflow.ledger import retraining_pending
from wormflow.methods import get


def _previous_choose_threshold(scores, labels, grid=None) -> tuple[float, float, str]:
    """The patch chooser as it was before the rule existed (commit 2aa4fb9), two-class branch, verbatim logic."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if grid is None:
        u = np.unique(scores)
        candidates = u if u.size == 1 else np.concatenate([u[:1], (u[:-1] + u[1:]) / 2, u[-1:]])
    else:
        candidates = np.asarray(grid, dtype=np.float64)
    y = labels.astype(bool)[None, :]
    pred = scores[None, :] >= candidates[:, None]
    tp, fp, fn = (pred & y).sum(1), (pred & ~y).sum(1), (~pred & y).sum(1)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    source = "grid 0.1–0.9" if grid is not None else "observed dev scores"
    return float(candidates[best[len(best) // 2]]), float(f1.max()), f"F1-max on dev ({source})"


def _dev_sets(n_sets: int, seed: int = 0):
    """Small two-class dev sets like the real ones: continuous, tied, rounded and saturated scores."""
    rng = np.random.default_rng(seed)
    for k in range(n_sets):
        n = int(rng.integers(4, 80))
        y = np.r_[0, 1, (rng.random(n - 2) < rng.uniform(0.2, 0.8))].astype(int)
        kind = k % 4
        if kind == 0:
            s = rng.normal(size=n) + rng.uniform(0, 3) * y
        elif kind == 1:
            s = rng.integers(0, 6, n).astype(float)
        elif kind == 2:
            s = np.clip(rng.uniform(0, 1, n) + 0.4 * y, 0, 1).round(2)
        else:
            s = 1 / (1 + np.exp(-rng.normal(0, 30, n) - 20 * y))  # saturates at exactly 0 and 1
        yield s, y


def test_f1max_reproduces_the_previous_choices_exactly():
    for s, y in _dev_sets(400):
        for grid in (None, decision.RESNET_GRID):
            c = decision.choose_threshold(s, y, grid, "f1max")
            assert (c.threshold, c.dev_f1, c.rule) == _previous_choose_threshold(s, y, grid)
            assert decision.choose_threshold(s, y, grid) == c  # f1max is the function's default


def test_robust_takes_the_middle_of_the_gap_where_f1max_takes_its_edge():
    # separable dev; every positive scores 1.0 exactly (a saturated probability): F1 is 1 anywhere in (0.3, 1.0],
    # and F1-max takes the top candidate, 1.0 itself, so a test positive at 0.99 would be missed
    scores = np.array([0.05, 0.1, 0.2, 0.3, 1.0, 1.0, 1.0])
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    f1max = decision.choose_threshold(scores, labels, rule="f1max")
    robust = decision.choose_threshold(scores, labels, rule="robust")
    assert f1max.threshold == 1.0 and f1max.dev_f1 == 1.0
    assert robust.threshold == pytest.approx(0.65) and robust.dev_f1 == 1.0
    assert (robust.kind, robust.separated, robust.n) == ("gap midpoint", True, 7)
    assert robust.rule.startswith("robust: middle of the dev gap")
    # any separable dev set: exactly the middle of the gap
    for s, y in _dev_sets(200, seed=1):
        if s[y == 0].max() < s[y == 1].min():
            c = decision.choose_threshold(s, y, rule="robust")
            assert c.kind == "gap midpoint" and c.threshold == (s[y == 0].max() + s[y == 1].min()) / 2 and c.dev_f1 == 1.0


def test_robust_on_overlapping_classes_is_deterministic_and_prefers_a_plateau():
    rng = np.random.default_rng(3)
    s = np.r_[rng.normal(0, 1, 30), rng.normal(2, 1, 30)]
    y = np.r_[np.zeros(30), np.ones(30)].astype(int)
    a, b = decision.choose_threshold(s, y, rule="robust"), decision.choose_threshold(s, y, rule="robust")
    assert a == b and a.kind == "bootstrap-mean F1" and not a.separated
    assert a.threshold in decision.midpoints(s) and -0.5 < a.threshold < 2.0
    assert decision.choose_threshold(s, y, rule="robust", seed=7).kind == "bootstrap-mean F1"
    assert "200 stratified bootstrap resamples" in a.rule
    assert decision.choose_threshold(s, y, rule="f1max").dev_f1 >= a.dev_f1  # F1-max is the in-sample optimum
    # what it maximises: the F1 averaged over the resamples (at least that of the in-sample optimum)
    cands = decision.midpoints(s)
    mean_f1 = decision.bootstrap_f1_sum(np.sort(s[y == 1]), np.sort(s[y == 0]), cands, decision.N_BOOT, 0) / decision.N_BOOT
    f1max_t = decision.choose_threshold(s, y, rule="f1max").threshold
    assert mean_f1[cands == a.threshold][0] == pytest.approx(mean_f1.max())
    assert mean_f1[cands == a.threshold][0] >= mean_f1[cands == f1max_t][0]
    # F1 ties that lie apart (12 dev images, integer scores): F1-max takes the median tied candidate, 11;
    # the bootstrap mean settles on 14.5 (both have dev F1 2/3)
    s2 = np.array([8, 9, 10, 12, 12, 14, 15, 17, 18, 19, 21, 28], float)
    y2 = np.array([1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 1, 1])
    assert decision.choose_threshold(s2, y2, rule="f1max").threshold == 11.0
    assert decision.choose_threshold(s2, y2, rule="robust").threshold == 14.5


def test_robust_with_a_grid_picks_grid_points():
    grid = decision.RESNET_GRID
    # separable, gap (0.32, 0.71): the grid point nearest its middle (0.515), not the median of all tied ones
    s = np.array([0.05, 0.2, 0.32, 0.71, 0.95, 0.99])
    y = np.array([0, 0, 0, 1, 1, 1])
    r = decision.choose_threshold(s, y, grid, "robust")
    assert r.kind == "gap midpoint" and r.threshold in grid and r.threshold == pytest.approx(0.51) and r.dev_f1 == 1.0
    assert "grid 0.1–0.9" in r.rule
    # the gap holds no grid point: the bootstrap rule over the grid
    s = np.array([0.05, 0.2, 0.912, 0.915, 0.95, 0.99])
    r = decision.choose_threshold(s, y, grid, "robust")
    assert r.kind == "bootstrap-mean F1" and r.threshold in grid
    # overlapping classes
    rng = np.random.default_rng(0)
    s = rng.uniform(0, 1, 50)
    y = (s + rng.normal(0, 0.2, 50) > 0.5).astype(int)
    r = decision.choose_threshold(s, y, grid, "robust")
    assert r.threshold in grid and r == decision.choose_threshold(s, y, grid, "robust")


@pytest.mark.parametrize("cls", [0, 1])
def test_one_class_dev_keeps_its_fallback_under_both_rules(cls, caplog):
    scores = np.random.default_rng(0).uniform(0, 1, 200)
    with caplog.at_level(logging.WARNING):
        f = decision.choose_threshold(scores, np.full(200, cls), rule="f1max")
        r = decision.choose_threshold(scores, np.full(200, cls), decision.RESNET_GRID, rule="robust")
    assert f.threshold == r.threshold and f.rule == r.rule and r.kind == "one-class" and "one-class" in r.rule
    assert ((scores >= r.threshold) == bool(cls)).mean() == pytest.approx(0.95, abs=0.01)


def test_bad_rules_and_inputs():
    with pytest.raises(ValueError, match="unknown threshold rule"):
        decision.choose_threshold([0.1, 0.9], [0, 1], rule="median")
    with pytest.raises(ValueError, match="without dev scores"):
        decision.choose_threshold([], [], rule="robust")
    with pytest.raises(ValueError, match="n_boot"):
        decision.choose_threshold([0.1, 0.5, 0.4, 0.9], [0, 0, 1, 1], rule="robust", n_boot=0)


def test_fields_wrapper_is_the_same_chooser():
    rng = np.random.default_rng(5)
    y = rng.random(3000) < 0.2
    s = rng.normal(0, 1, y.size) + 1.5 * y
    for rule in decision.THRESHOLD_RULES:
        t = F.choose_threshold(s, y, rule, max_n=1000)
        c = decision.choose_threshold(s, y, rule=rule, max_n=1000, max_candidates=F.metrics.MAX_CANDIDATES)
        assert (t.value, t.rule, t.dev_f1, t.separated, t.n) == (c.threshold, c.kind, c.dev_f1, c.separated, c.n)


# ----------------------------------------------------------------------------- from the config to the model


def _split(rng, n: int, size: int = 16) -> LabeledImages:
    """Bright patches; the wormed half gets a dark stripe (the dark-pixel floor separates them)."""
    images = np.full((2 * n, size, size, 3), 200, np.uint8)
    images += rng.integers(0, 20, images.shape).astype(np.uint8)
    labels = np.repeat([0, 1], n)
    images[labels == 1, size // 2 - 2 : size // 2 + 2] = 40
    return LabeledImages(images, labels.astype(np.int64), [f"i{k}" for k in range(2 * n)])


@pytest.mark.parametrize("rule", decision.THRESHOLD_RULES)
def test_train_records_the_rule_and_the_ledger_compares_it(rule, tmp_path):
    from wormflow.train import train

    rng = np.random.default_rng(0)
    cfg = {"enabled": True, "image_size": 16, "level": 0.6}
    art = train(
        "dark_pixels", cfg, _split(rng, 6), _split(rng, 6), tmp_path, device="cpu", tensorboard=False, threshold_rule=rule
    )
    assert art.extra["calibration"] == {"threshold_rule": rule, "n_boot": decision.N_BOOT}
    assert art.threshold_rule.startswith("F1-max" if rule == "f1max" else "robust")
    dev_scores = np.asarray(art.dev_scores)
    expected = decision.choose_threshold(dev_scores, art.dev_labels, rule=rule)
    assert art.threshold == expected.threshold
    cal = get("dark_pixels").calibrate(dev_scores[:, None], _split(np.random.default_rng(1), 6), cfg, rule=rule)
    assert cal.threshold_rule.startswith("F1-max" if rule == "f1max" else "robust")

    from wormflow.digest import json_digest

    training = {
        "models": {"dark_pixels": {0: str(tmp_path / "model.pt")}},
        "sections": {"dark_pixels": cfg},
        "code": {"dark_pixels": art.code_digest},
        "manifests": {},
    }
    assert art.config_hash == json_digest(cfg)
    same = {"threshold_rule": rule, "n_boot": decision.N_BOOT}
    assert retraining_pending({**training, "calibration": same}) == []
    assert retraining_pending(training) == []  # no calibration section given: nothing compared
    other = "robust" if rule == "f1max" else "f1max"
    (pending,) = retraining_pending({**training, "calibration": {"threshold_rule": other, "n_boot": 200}})
    assert pending["reasons"] == [f"threshold rule changed ({rule} → {other}, calibration.threshold_rule)"]
    changed_boot = retraining_pending({**training, "calibration": {"threshold_rule": rule, "n_boot": 50}})
    assert bool(changed_boot) == (rule == "robust")


def test_train_refuses_an_unknown_rule(tmp_path):
    from wormflow.train import train

    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown threshold rule"):
        train("dark_pixels", {"enabled": True, "image_size": 16, "level": 0.6}, _split(rng, 4), _split(rng, 4), tmp_path,
              device="cpu", tensorboard=False, threshold_rule="median")  # fmt: skip
