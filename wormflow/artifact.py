"""The trained-model artifact (``model.pt``): saving atomically, loading safely.

Kept free of torchvision so that evaluation and reporting can read artifacts
in a light environment.  Loading always uses ``weights_only=True``: a crafted
pickle (code disguised as a checkpoint) is refused, never executed.
"""

from __future__ import annotations

import torch

from .atomic import atomic_path

ARTIFACT_FORMAT = "wormflow-model"
ARTIFACT_VERSION = 1


def save_artifact(path, artifact: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(artifact, tmp)


def load_artifact(path) -> dict:
    """Load a ``model.pt`` safely (``weights_only=True``: no pickled code is ever run)."""
    artifact = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(artifact, dict) or artifact.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{path} is not a wormflow model artifact")
    if artifact.get("format_version") != ARTIFACT_VERSION:
        raise ValueError(f"{path}: unsupported artifact version {artifact.get('format_version')}")
    return artifact
