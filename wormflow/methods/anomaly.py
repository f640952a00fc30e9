"""What the two generative methods (VAE, GAN) share: the anomaly-score recipe of the report.

Both are trained on ``wormed`` images only (the report's "normal" class) and turn an image into
features — the mean squared reconstruction error, a high quantile of the per-pixel error map
(worms are small, local structures, so the worst reconstructed pixels say more than the mean;
the usual image score of anomaly maps), method-specific extras, and the report's colour ratio
(always the last feature) — which a logistic combiner fitted on the dev split turns into
``P(wormed)``.  Because the dev split also fits the combiner, the threshold is chosen (by the
configured rule, :func:`wormflow.decision.choose_threshold`) on out-of-fold combined scores
(:func:`wormflow.decision.cross_validated_scores`).  With
``colour.fit_on_dev`` the colour heuristic's α/β are chosen on dev too.

Per image they also output the reconstruction (uint8), the error map (mean absolute error
×127.5, uint8) and the colour mask (0/1).
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch

from ..colour import colour_ratio
from ..decision import DEFAULT_THRESHOLD_RULE, N_BOOT, Combiner, choose_threshold, cross_validated_scores, fit_combiner
from ..transforms import to_uint8_image
from .base import Calibration, GalleryMap, Method

log = logging.getLogger(__name__)

DEFAULT_ERROR_QUANTILE = 0.99
DEFAULT_COLOUR_GRID = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0)


class AnomalyMethod(Method):
    """A reconstruction model trained on worm images, scored by error features + colour ratio."""

    maps = ("recon", "error_map", "colour_mask")
    field_map = "error_map"

    def training_images(self, train_set):
        wormed = train_set.select(train_set.labels == 1)
        if len(wormed.labels) == 0:
            raise ValueError(f"{self.name}: no wormed images in the train split (it trains on worm images only)")
        return wormed

    def scores(self, features: np.ndarray, combiner: Combiner | None) -> np.ndarray:
        if combiner is None:
            raise RuntimeError(f"{self.name}: no fitted combiner")
        return combiner(features)

    def calibrate(
        self, features: np.ndarray, dev_set, cfg: dict, rule: str = DEFAULT_THRESHOLD_RULE, n_boot: int = N_BOOT
    ) -> Calibration:
        cfg = copy.deepcopy(cfg)  # the colour bounds may be fitted below; the artifact stores what scoring uses
        c = cfg.get("combiner_c", 1.0)
        if cfg["colour"].get("fit_on_dev"):
            cfg["colour"], features = fit_colour_bounds(self, features, dev_set, cfg)
        combiner = fit_combiner(features, dev_set.labels, list(self.feature_names), list(self.log_features), c=c)
        scores = combiner(features) if len(features) else np.zeros(0)
        if len(scores) == 0:
            raise ValueError(f"{self.name}: the dev split is empty; a threshold cannot be chosen")
        oof = cross_validated_scores(features, dev_set.labels, list(self.feature_names), list(self.log_features), c=c)
        choice = choose_threshold(scores if oof is None else oof, dev_set.labels, rule=rule, n_boot=n_boot)
        if oof is not None:
            choice.rule += ", out-of-fold combined scores"
        return Calibration(cfg, combiner, float(choice.threshold), choice.rule, float(choice.dev_f1), scores)


def reconstruction(x: torch.Tensor, recon: torch.Tensor, quantile: float) -> dict:
    """Error features and maps of a reconstruction (both in [-1, 1])."""
    recon = recon.float()
    diff = recon - x
    err = diff.abs().mean(1)  # per-pixel error map, (B, H, W)
    flat = err.flatten(1)
    k = max(1, min(flat.shape[1], math.ceil(quantile * flat.shape[1])))
    return {
        "recon_error": diff.pow(2).mean((1, 2, 3)),
        "recon_error_q": flat.kthvalue(k, dim=1).values,
        "recon": to_uint8_image(recon).permute(0, 2, 3, 1),
        "error_map": (err * 127.5).clamp_(0, 255).round_().to(torch.uint8),
    }


def anomaly_outputs(x: torch.Tensor, x_u8: torch.Tensor, recon: torch.Tensor, extras: list, cfg: dict) -> dict:
    """Features ``[recon_error, recon_error_q, *extras, colour_ratio]`` and the maps."""
    rec = reconstruction(x, recon, cfg.get("error_quantile", DEFAULT_ERROR_QUANTILE))
    ratio, mask = colour_ratio(x_u8, cfg["colour"]["alpha"], cfg["colour"]["beta"])
    feats = torch.stack([rec["recon_error"], rec["recon_error_q"], *extras, ratio], 1)
    return {"features": feats, "recon": rec["recon"], "error_map": rec["error_map"], "colour_mask": mask.to(torch.uint8)}


def model_input(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` in the dtype of ``model``'s weights (bf16 where the scorer cast them)."""
    return x.to(next(model.parameters()).dtype)


def fit_colour_bounds(method: Method, feats: np.ndarray, dev_set, cfg: dict) -> tuple[dict, np.ndarray]:
    """Choose the colour heuristic's α/β (shared by the three channels) on the dev split.

    For every (α, β) of ``colour.fit_grid`` the colour-ratio column (the last
    feature) is recomputed and the out-of-fold dev AUROC of the combiner
    measured; the best pair wins (ties: the larger dev F1, then the first pair).
    Needs both classes in dev; otherwise the configured bounds stay.
    """
    from sklearn.metrics import roc_auc_score

    colour = dict(cfg["colour"])
    labels = dev_set.labels
    if np.unique(labels).size < 2:
        log.warning("colour bounds not fitted: the dev split has one class only")
        return colour, feats
    names, logs, c = list(method.feature_names), list(method.log_features), cfg.get("combiner_c", 1.0)
    x = torch.from_numpy(np.ascontiguousarray(dev_set.images)).permute(0, 3, 1, 2)
    best = None
    for a in colour.get("fit_grid", DEFAULT_COLOUR_GRID):
        for b in colour.get("fit_grid", DEFAULT_COLOUR_GRID):
            ratio, _ = colour_ratio(x, [a] * 3, [b] * 3)
            trial = feats.copy()
            trial[:, -1] = ratio.numpy()
            scores = cross_validated_scores(trial, labels, names, logs, c=c)
            if scores is None:
                scores = fit_combiner(trial, labels, names, logs, c=c)(trial)
            key = (round(roc_auc_score(labels, scores), 6), choose_threshold(scores, labels).dev_f1)
            if best is None or key > best[0]:
                best = (key, a, b, trial)
    (auroc, f1), a, b, trial = best
    log.info("colour bounds fitted on dev: alpha %g, beta %g (dev AUROC %.4f, F1 %.4f)", a, b, auroc, f1)
    colour.update(alpha=[a] * 3, beta=[b] * 3, fitted_dev_auroc=auroc)
    return colour, trial


RECON_GALLERY = GalleryMap("recon", "reconstruction", "rgb")
ERROR_GALLERY = GalleryMap("error_map", "error map", "heat")
MASK_GALLERY = GalleryMap("colour_mask", "colour mask", "mask")
