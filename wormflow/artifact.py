"""The trained-model artifact (``model.pt``): one typed record that training writes and scoring reads.

:class:`Artifact` holds the weights, the fitted score function (combiner) and threshold, the
config section the model was trained with, and its provenance.  ``save`` writes it atomically
as a plain dict of tensors and numbers (plus a small JSON sidecar, ``model.json``, with
everything but the tensors, which the workflow reads at DAG-building time without torch);
``load`` always uses ``weights_only=True``: a crafted pickle (code disguised as a checkpoint) is
refused, never executed.  ``scorer`` builds the method's network on the ``meta`` device and
assigns the stored tensors (no random initialisation, nothing missing), ready to score.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .atomic import atomic_path, atomic_write_text

if TYPE_CHECKING:  # torch is imported where tensors are handled, so that reading a sidecar needs no torch
    import torch

    from .scoring import Scorer

ARTIFACT_FORMAT = "wormflow-model"
ARTIFACT_VERSION = 1
SIDECAR_NAME = "model.json"


@dataclass
class Artifact:
    method: str
    config: dict  # the method's config section as scoring uses it (with any bounds fitted on dev)
    state_dict: dict
    threshold: float
    threshold_rule: str
    dev_f1: float
    combiner: dict | None
    config_hash: str  # digest of the config section as given (before anything was fitted)
    weights_init: str
    seed: int
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    device: str
    train_time_s: float
    n_train: int
    n_dev: int
    dev_scores: list[float]
    dev_labels: list[int]
    trained_utc: str
    data_digest: str = ""  # the training data (train + dev content) the model was trained on
    code_digest: str = ""  # the package code it depends on
    package_version: str = __version__
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict:
        return {"format": ARTIFACT_FORMAT, "format_version": ARTIFACT_VERSION, **dataclasses.asdict(self)}

    def summary(self) -> dict:
        """Everything but the tensors (JSON-serialisable): provenance, threshold and the dev scores drift is measured against."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "state_dict"}

    def save(self, path: str | Path) -> None:
        """Write ``model.pt`` atomically, then its JSON sidecar beside it."""
        import torch

        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(self.to_dict(), tmp)
        atomic_write_text(path.with_name(SIDECAR_NAME), json.dumps(self.summary(), indent=1, default=str))

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        """Load a ``model.pt`` safely (``weights_only=True``: no pickled code is ever run)."""
        import torch

        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{path} is not a wormflow model artifact")
        if data.get("format_version") != ARTIFACT_VERSION:
            raise ValueError(f"{path}: unsupported artifact version {data.get('format_version')}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    # ------------------------------------------------------------------ scoring

    def model(self) -> torch.nn.Module:
        """The network with its trained weights, built without a random initialisation (on the meta
        device, then the stored tensors assigned: a GAN scorer is ready in 0.12 s instead of 0.37 s;
        benchmarks/results/scoring-knobs-*.json)."""
        import torch

        from .methods import get

        with torch.device("meta"):
            model = get(self.method).build(self.config)
        model.load_state_dict(self.state_dict, assign=True)  # strict: every tensor is replaced
        left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
        if left:
            raise ValueError(f"{self.method} artifact lacks tensors: {', '.join(left[:5])}")
        return model

    def scorer(self, device: str | torch.device = "auto") -> Scorer:
        """A :class:`~wormflow.scoring.Scorer` with this artifact's weights, score function and threshold."""
        import torch

        from .decision import Combiner
        from .runtime import select_device
        from .scoring import Scorer

        dev = device if isinstance(device, torch.device) else select_device(device)
        combiner = Combiner.from_dict(self.combiner) if self.combiner else None
        return Scorer(self.method, self.model(), self.config, dev, combiner, self.threshold, own_model=True)


def read_sidecar(model_path: str | Path) -> dict | None:
    """The JSON sidecar of a ``model.pt`` (None when missing or unreadable)."""
    try:
        return json.loads(Path(model_path).with_name(SIDECAR_NAME).read_text())
    except (OSError, ValueError):
        return None
