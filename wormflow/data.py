"""Decoded images of a labeled split, as training and calibration use them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .store import ImageStore, reading


@dataclass
class LabeledImages:
    """Decoded images of a labeled split at one resolution."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64
    ids: list[str]

    def select(self, mask: np.ndarray) -> LabeledImages:
        return LabeledImages(self.images[mask], self.labels[mask], [i for i, m in zip(self.ids, mask) if m])

    @classmethod
    def empty(cls, size: int) -> LabeledImages:
        return cls(np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64), [])


def load_split(store_paths: Sequence[str], size: int) -> LabeledImages:
    """Concatenate the image stores of one labeled split at resolution ``size`` (shards in order)."""
    imgs, labels, ids = [], [], []
    for p in store_paths:
        with reading(p):  # a damaged store is removed and rebuilt by the next run
            store = ImageStore.open(p)
            if len(store):
                imgs.append(store.images(size))
                labels.append(store.labels.astype(np.int64))
                ids += store.ids
    if not imgs:
        return LabeledImages.empty(size)
    return LabeledImages(np.concatenate(imgs), np.concatenate(labels), ids)
