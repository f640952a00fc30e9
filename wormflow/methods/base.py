"""What a method is: one object that owns its network, its training epochs and its scoring outputs.

Every analysis method (and the hand-made floor) is a subclass of :class:`Method` in its own module
of this package (``vae.py``, ``gan.py``, ``resnet50.py``, ``dark_pixels.py``), registered by name
(:mod:`wormflow.methods`).  The generic code — training driver (:mod:`wormflow.train`), scorer
(:mod:`wormflow.scoring`), artifact (:mod:`wormflow.artifact`), pipeline steps, evaluation, ledger,
report and plots — only calls the attributes and methods below; none of it branches on a method's
name.  A method's config section (``methods.<name>`` in ``config.yaml``) is validated against the
schema beside its module (``<name>.schema.yaml``), whose ``x-wormflow`` block declares what the
workflow needs to know while it plans the jobs, without importing torch: whether the method is
trained once per seed, whether its jobs use a GPU, and which package files its trained model
depends on (:class:`wormflow.methods.Spec`).

Two families share more than the interface and have their own base classes:
:class:`wormflow.methods.anomaly.AnomalyMethod` (VAE and GAN: trained on worm images only;
reconstruction error and colour ratio combined by a logistic fit on dev) and the direct scores
below (ResNet-50's probability, the dark-pixel share).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..decision import DEFAULT_THRESHOLD_RULE, N_BOOT

if TYPE_CHECKING:  # torch is imported by the methods that need it, when they need it
    import torch

    from ..data import LabeledImages
    from ..decision import Combiner


@dataclass
class Calibration:
    """What training fits on the dev split after the epochs: the score function and the threshold."""

    cfg: dict  # the config section the artifact stores (a method may fit part of it on dev, e.g. colour bounds)
    combiner: Combiner | None
    threshold: float
    threshold_rule: str
    dev_f1: float
    dev_scores: np.ndarray


@dataclass(frozen=True)
class GalleryMap:
    """A per-image map shown in the report's galleries."""

    name: str  # dataset name in the score files (one of ``Method.maps``)
    title: str
    kind: str  # "rgb" (a reconstruction), "heat" (an error map) or "mask" (0/1)


class Method:
    """One method.  Subclasses set the class attributes and implement the network and scoring hooks."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # display name in the report
    short: ClassVar[str] = ""  # short display name (table columns, gallery headers)
    colour: ClassVar[str] = "#777777"  # the method's colour in every plot and table
    baseline: ClassVar[bool] = False  # a hand-made floor shown beside the learned methods
    cpu_batch: ClassVar[int] = 32  # model batch when scoring on a CPU (see wormflow.scoring)
    feature_names: ClassVar[tuple[str, ...]] = ()
    log_features: ClassVar[tuple[bool, ...]] = ()  # which features a combiner log-transforms
    maps: ClassVar[tuple[str, ...]] = ()  # per-image uint8 maps in the score files, beside score/pred/features
    gallery: ClassVar[tuple[GalleryMap, ...]] = ()
    field_map: ClassVar[str | None] = None  # the per-pixel map stitched into field maps (one of ``maps``); None: tile scores
    default_init: ClassVar[str] = "random initialisation"

    # ------------------------------------------------------------------ network

    def build(self, cfg: dict) -> torch.nn.Module:
        """The network for a config section (also called on the ``meta`` device to load an artifact)."""
        raise NotImplementedError

    def check_ready(self, cfg: dict) -> None:
        """Fail before any data is read when training cannot start (e.g. missing pretrained weights)."""

    def initial_model(self, cfg: dict) -> tuple[torch.nn.Module, str]:
        """The network training starts from, and a description of its initial weights."""
        return self.build(cfg), self.default_init

    # ------------------------------------------------------------------ training

    def training_images(self, train_set: LabeledImages) -> LabeledImages:
        """The training images this method learns from (default: the whole train split)."""
        return train_set

    def n_epochs(self, cfg: dict) -> int:
        return int(cfg["epochs"])

    def patience(self, cfg: dict) -> int | None:
        """Early stopping on the epoch rows' ``dev_loss`` after this many epochs without improvement (None: off)."""
        return None

    def optimizers(self, model: torch.nn.Module, cfg: dict) -> dict:
        return {"model": adam(model.parameters(), cfg)}

    def epoch_runner(self, model, opts: dict, fit_set, dev_set, device, cfg: dict, num_workers: int) -> Callable[[int], dict]:
        """A function ``epoch index -> history row`` that trains one epoch."""
        raise NotImplementedError

    # ------------------------------------------------------------------ scoring

    def outputs(self, model, x_u8: torch.Tensor, cfg: dict) -> dict[str, torch.Tensor]:
        """Features ``(B, F)`` (key ``features``) and the maps named in :attr:`maps` for a uint8 batch ``(B, 3, S, S)``."""
        raise NotImplementedError

    def scores(self, features: np.ndarray, combiner: Combiner | None) -> np.ndarray:
        """``P(wormed)``-like scores (higher = more worm-like) from the features."""
        raise NotImplementedError

    def calibrate(
        self, features: np.ndarray, dev_set: LabeledImages, cfg: dict, rule: str = DEFAULT_THRESHOLD_RULE, n_boot: int = N_BOOT
    ) -> Calibration:
        """Fit the score function and choose the threshold on the dev split by the threshold ``rule``
        (``"robust"`` or ``"f1max"``; ``n_boot`` bootstrap resamples for the robust rule when the dev
        classes overlap: :func:`wormflow.decision.choose_threshold`).  The workflow passes the config's
        ``calibration`` section."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def image_size(self, cfg: dict) -> int:
        return int(cfg["image_size"])

    def __repr__(self) -> str:
        return f"<method {self.name}>"


def adam(params, cfg: dict):
    import torch

    return torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg.get("weight_decay", 0.0))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -60, 60)))


def direct_calibration(
    scores: np.ndarray,
    dev_set: LabeledImages,
    cfg: dict,
    grid: Sequence[float] | None,
    rule: str = DEFAULT_THRESHOLD_RULE,
    n_boot: int = N_BOOT,
) -> Calibration:
    """The threshold of a method whose score needs no fitting: chosen on dev by ``rule`` (among ``grid``, if given)."""
    from ..decision import choose_threshold

    if len(scores) == 0:
        raise ValueError("the dev split is empty; a threshold cannot be chosen")
    choice = choose_threshold(scores, dev_set.labels, grid, rule, n_boot=n_boot)
    return Calibration(cfg, None, float(choice.threshold), choice.rule, float(choice.dev_f1), np.asarray(scores))
