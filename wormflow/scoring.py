"""Scoring: a batch of ``uint8`` images → features, score, prediction and the method's maps.

The same code computes the dev-split features during training (to fit the combiner and the
threshold) and scores batches afterwards, so what is tuned is exactly what runs.  What a method
computes comes from its module (:meth:`Method.outputs`); this module runs it fast:
under ``torch.inference_mode``, in channels_last layout, with BatchNorm folded into the
convolutions (:func:`fold_batchnorm`); in bf16 autocast on CUDA, with bf16 weights on CPUs with
native bf16 (``runtime.inference_dtype``), else in float32; on the CPU in the method's model
batches (:attr:`Method.cpu_batch`).  A non-finite feature or score (diverged weights) fails the
batch with a clear message: a wrong score is worse than a failed job.

Input batches are ``(B, S, S, 3)`` ``uint8`` arrays as stored in the image stores; ``permute``
turns them into ``(B, 3, S, S)`` tensors that are already channels_last in memory, so no copy is
made before the model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .decision import Combiner
from .methods import get as get_method
from .runtime import inference_dtype


class NonFiniteScoreError(RuntimeError):
    """A model produced NaN or infinite features or scores."""


@dataclass
class Outputs:
    """Per-image results of one batch (numpy, on the CPU)."""

    features: np.ndarray
    score: np.ndarray
    pred: np.ndarray | None
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # the method's per-image uint8 maps


def to_device_batch(images, device: torch.device) -> torch.Tensor:
    """``(B, S, S, 3)`` uint8 (numpy or tensor) → ``(B, 3, S, S)`` uint8 channels_last tensor on ``device``."""
    t = torch.as_tensor(images)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t.permute(0, 3, 1, 2)


class Scorer:
    """A trained method ready to score batches."""

    def __init__(
        self,
        method: str,
        model: nn.Module,
        cfg: dict,
        device: torch.device,
        combiner: Combiner | None,
        threshold: float | None,
        *,
        own_model: bool = False,
    ):
        """``own_model``: ``model`` was built for this scorer and may be changed in place (folded,
        cast); otherwise (a model still being trained) the scorer works on a copy."""
        self.method = get_method(method)
        self.model = (
            fold_batchnorm(model, inplace=own_model)
            .to(device=device, dtype=inference_dtype(device), memory_format=torch.channels_last)
            .eval()
        )
        self.cfg = cfg
        self.device = device
        self.combiner = combiner
        self.threshold = threshold
        self.image_size = self.method.image_size(cfg)
        self.feature_names = self.method.feature_names

    @torch.inference_mode()
    def raw(self, images) -> dict[str, np.ndarray]:
        """Features and maps of a batch; on the CPU in model batches of the method's ``cpu_batch``."""
        step = self.method.cpu_batch
        if self.device.type != "cpu" or len(images) <= step:
            return self._raw(images)
        parts = [self._raw(images[start : start + step]) for start in range(0, len(images), step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _raw(self, images) -> dict[str, np.ndarray]:
        out = self.method.outputs(self.model, to_device_batch(images, self.device), self.cfg)
        raw = {k: v.cpu().numpy() for k, v in out.items()}
        bad = ~np.isfinite(raw["features"]).all(axis=1)
        if bad.any():
            raise NonFiniteScoreError(
                f"{self.method.name}: {int(bad.sum())} of {len(bad)} images got non-finite features "
                f"({', '.join(self.feature_names)}); the model's weights may have diverged — retrain it"
            )
        return raw

    def scores(self, features: np.ndarray) -> np.ndarray:
        scores = self.method.scores(features, self.combiner)
        if not np.isfinite(scores).all():
            raise NonFiniteScoreError(f"{self.method.name}: non-finite scores from finite features")
        return scores

    def __call__(self, images) -> Outputs:
        raw = self.raw(images)
        score = self.scores(raw["features"]).astype(np.float32)
        pred = (score >= self.threshold).astype(np.int8) if self.threshold is not None else None
        maps = {name: raw[name] for name in self.method.maps}
        return Outputs(features=raw["features"].astype(np.float32), score=score, pred=pred, maps=maps)

    def features(self, images_iter: Iterable[np.ndarray]) -> np.ndarray:
        """Features of many batches, concatenated."""
        feats = [self.raw(b)["features"] for b in images_iter]
        return np.concatenate(feats) if feats else np.zeros((0, len(self.feature_names)), np.float32)


def batches(images: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(images), size):
        yield images[start : start + size]


# --------------------------------------------------------------------------- BatchNorm folding


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` (``model`` itself with ``inplace``) with every BatchNorm2d
    that directly follows a convolution folded into that convolution's weights (the BatchNorm
    becomes an Identity).

    Scoring only: the same function in fewer passes over memory (ResNet-50 has 53 BatchNorms),
    equal to the original up to float rounding.  Pairs found: neighbours in an ``nn.Sequential``
    (the VAE, DCGAN and encoder blocks, torchvision's ``downsample``) and torchvision's
    ``conv<k>``/``bn<k>`` attributes (ResNet stem and bottlenecks, whose ``forward`` applies
    ``bn<k>`` right after ``conv<k>``).  Without ``inplace``, ``model`` itself is left untouched
    (a model still being trained); a model loaded only to score is folded in place (no copy).
    """
    folded = (model if inplace else copy.deepcopy(model)).eval()
    _fold_in_place(folded)
    return folded


def _fold_pair(conv: nn.Module, bn: nn.Module) -> nn.Module | None:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats or bn.running_mean is None:
        return None
    if type(conv) is nn.Conv2d:
        return fuse_conv_bn_eval(conv, bn)
    if type(conv) is nn.ConvTranspose2d:
        return fuse_conv_bn_eval(conv, bn, transpose=True)
    return None


def _fold_in_place(module: nn.Module) -> None:
    for child in module.children():
        _fold_in_place(child)
    names = list(module._modules)
    if isinstance(module, nn.Sequential):
        pairs = list(zip(names, names[1:]))
    else:
        pairs = [(f"conv{n[2:]}", n) for n in names if n.startswith("bn") and f"conv{n[2:]}" in module._modules]
    for conv_name, bn_name in pairs:
        fused = _fold_pair(module._modules[conv_name], module._modules[bn_name])
        if fused is not None:
            module._modules[conv_name] = fused
            module._modules[bn_name] = nn.Identity()
