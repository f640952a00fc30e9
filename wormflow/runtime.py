"""Device selection, seeding and the fast-path switches (bf16 autocast, channels_last)."""

from __future__ import annotations

import contextlib
import functools
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
    """Training: bf16 autocast on CUDA; fp32 elsewhere (CPU training stays fp32, as the report's)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def inference_dtype(device: torch.device) -> torch.dtype:
    """Scoring: the dtype the models' weights are cast to, once, when a scorer is built.

    bf16 on CPUs with native bf16 (see :func:`cpu_bf16`): the weights are cast once instead of
    by autocast on every batch (GAN scoring 1.23x, ResNet-50 1.06x as fast, the VAE the same;
    benchmarks/results/scoring-knobs-*.json); float32 elsewhere, and on
    CUDA, where the float32 weights run under bf16 autocast (:func:`autocast`).  The dev scores
    that fit a method's threshold and the shard scores it is applied to both go through a
    scorer, so on one machine they are computed the same way.
    """
    if device.type == "cpu" and cpu_bf16():
        return torch.bfloat16
    return torch.float32


CPU_BF16_ENV = "WORMFLOW_CPU_BF16"
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16() -> bool:
    """Score in bf16 on this CPU?  ``WORMFLOW_CPU_BF16=1``/``0`` decides; unset (or ``auto``): yes when
    the CPU has native bf16 dot products (AVX512-BF16 or AMX-BF16, e.g. AMD Zen 4, Intel Sapphire
    Rapids), where oneDNN runs the three models' bf16 convolutions about 3x faster than fp32
    (benchmarks/throughput.py); no elsewhere (emulated bf16 is slower than fp32)."""
    choice = os.environ.get(CPU_BF16_ENV, "auto").strip().lower()
    if choice in ("1", "true", "yes", "on"):
        return True
    if choice in ("0", "false", "no", "off"):
        return False
    if choice != "auto":
        raise ValueError(f"{CPU_BF16_ENV} must be auto, 1 or 0, not {choice!r}")
    return _cpu_has_native_bf16()


@functools.cache
def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    return any(f in flags for f in _BF16_FLAGS) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except OSError:
        pass
    return False  # not Linux, or no flags line: stay in fp32


def device_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(N, S, S, 3)`` uint8 → ``(N, 3, S, S)`` uint8 tensor on ``device`` (channels_last in memory)."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)


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
