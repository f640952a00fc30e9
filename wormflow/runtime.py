"""Device selection, seeding and the fast-path switches (bf16 autocast, channels_last)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` fails loudly when there is no GPU."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is visible (set device: auto to fall back to CPU)")
    return torch.device(preference)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); optionally force deterministic kernels (slower)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op elsewhere (bf16 on CPUs without AMX is slower, not faster)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last everywhere: faster convolutions with cuDNN and with oneDNN on CPUs."""
    return torch.channels_last


def rng_state() -> dict:
    """All RNG states training depends on, as tensors and plain numbers (``weights_only``-loadable)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_hash(cfg: dict) -> str:
    """A stable hash of a JSON-serialisable config section."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]
