"""Loading the real BBBC010 patches for the method tests (decoded with the package's own decoder)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from wormflow.data import LabeledImages
from wormflow.imageio import decode_image, resize_rgb

CLASSES = ("no_wormed", "wormed")


@lru_cache(maxsize=16)
def _load(root: str, split: str, size: int) -> LabeledImages:
    images, labels, ids = [], [], []
    for label, cls in enumerate(CLASSES):
        for path in sorted((Path(root) / "labeled" / split / cls).glob("*.png")):
            images.append(resize_rgb(decode_image(path), size))
            labels.append(label)
            ids.append(f"{cls}/{path.name}")
    return LabeledImages(np.stack(images), np.array(labels, dtype=np.int64), ids)


def load_split(root: Path, split: str, size: int) -> LabeledImages:
    """A labeled split of the real data at ``size`` (cached per session)."""
    return _load(str(root), split, size)
