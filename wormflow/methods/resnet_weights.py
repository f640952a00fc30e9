"""Initial weights for ResNet-50: ``auto | imagenet | none | <path>``.

* ``imagenet`` loads torchvision's ``IMAGENET1K_V2`` from the torch hub cache
  (``$TORCH_HOME/hub/checkpoints/``, by default ``~/.cache/torch``).  When the
  file is absent it tries to download it once; when that fails (compute nodes
  and CI have no network) it raises :class:`WeightsUnavailableError` *before*
  any training starts, saying which file to place where.
* ``auto`` (the default, so that a fresh clone runs offline) uses the ImageNet
  weights when they are in the cache and random initialisation otherwise.
* ``none`` is random initialisation.
* ``<path>`` is a state dict saved by ``torch.save`` (loaded with
  ``weights_only=True``): either a full torchvision ResNet-50 (1000-class
  ``fc``, which is replaced) or one of ours (``fc.0.*``).

Which one was used is returned as a short description that training stores
in the checkpoint and the report shows.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 20


class WeightsUnavailableError(RuntimeError):
    """The requested pretrained weights are not on this machine and cannot be fetched."""


def imagenet_weights():
    import torchvision

    return torchvision.models.ResNet50_Weights.IMAGENET1K_V2


def imagenet_cache_file() -> Path:
    """Where torchvision looks for the ImageNet ResNet-50 weights."""
    url = imagenet_weights().url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _missing_message(path: Path, reason: str) -> str:
    url = imagenet_weights().url
    return (
        f"ResNet-50 ImageNet weights (IMAGENET1K_V2) are not available: {reason}.\n"
        f"  Expected file: {path}\n"
        f"  On a machine with network access, fetch it with\n"
        f"      curl -L -o {path.name} {url}\n"
        f"  or  python -c \"import torchvision; torchvision.models.resnet50(weights='IMAGENET1K_V2')\"\n"
        f"  (which stores it under ~/.cache/torch/hub/checkpoints/), then copy it to {path}\n"
        f"  on the machine that trains (set TORCH_HOME to use another cache directory).\n"
        f"  Or set methods.resnet50.weights to 'auto' or 'none' to train from random initialisation."
    )


def _download(path: Path) -> None:
    url = imagenet_weights().url
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=None, progress=False)
    except Exception as exc:  # URLError, timeouts, HTTP errors: all mean "no network"
        raise WeightsUnavailableError(_missing_message(path, f"download failed ({exc.__class__.__name__}: {exc})")) from None
    finally:
        socket.setdefaulttimeout(old)


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"cannot load weights from {path}: {exc}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path} does not hold a state dict")
    return state


def _apply_backbone(model: nn.Module, state: dict, source: str) -> None:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "fc.0.weight" in state:
        model.load_state_dict(state)
        return
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WeightsUnavailableError(
            f"{source} is not a ResNet-50 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def resolve_weights(spec: str) -> tuple[str, Path | None]:
    """Return ``(kind, file)`` for a weights spec; ``kind`` is ``imagenet``, ``file`` or ``none``.

    Raises :class:`WeightsUnavailableError` when the spec cannot be satisfied, so
    callers can check it before loading data or training.
    """
    if spec == "none":
        return "none", None
    if spec in ("imagenet", "auto"):
        path = imagenet_cache_file()
        if path.is_file():
            return "imagenet", path
        if spec == "auto":
            return "none", None
        _download(path)
        return "imagenet", path
    path = Path(spec)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    return "file", path


def build_resnet50(spec: str = "auto") -> tuple[nn.Module, str]:
    """Build the report's ResNet-50 with initial weights from ``spec``; return it and a description."""
    from .resnet50 import resnet50_binary

    kind, path = resolve_weights(spec)
    model = resnet50_binary()
    if kind == "none":
        if spec == "auto":
            log.warning(
                "ResNet-50: ImageNet weights not found at %s; training from random initialisation "
                "(weights: auto). Place the file there to fine-tune from ImageNet.",
                imagenet_cache_file(),
            )
        return model, "random initialisation"
    state = _load_state(path)
    _apply_backbone(model, state, str(path))
    if kind == "imagenet":
        log.info("ResNet-50: ImageNet IMAGENET1K_V2 weights from %s", path)
        return model, f"ImageNet IMAGENET1K_V2 ({path.name})"
    log.info("ResNet-50: weights from %s", path)
    return model, f"file {path}"
