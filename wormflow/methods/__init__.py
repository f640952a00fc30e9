"""The methods, one module each, found by name.

A method ``<name>`` is two files in this package: ``<name>.py``, which defines ``METHOD``, an
instance of a :class:`~wormflow.methods.base.Method` subclass (network, training epochs, scoring
outputs, features, display label and colour, CPU batch size), and ``<name>.schema.yaml``, the JSON
schema of its config section ``methods.<name>`` with an ``x-wormflow`` block (:class:`Spec`: what
the workflow needs while it plans jobs — seeds, GPU, the code a trained model depends on — read
without importing torch).  Which methods run, and in which order the report lists them, is the
order of the ``methods`` section of the configuration (:func:`enabled`).  Modules are imported on
first use (they import torch).

Adding a method: see "Adding a method" in the README's development section.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from .base import Calibration, GalleryMap, Method

__all__ = ["Calibration", "GalleryMap", "Method", "Spec", "available", "enabled", "get", "schema_path", "spec"]

PACKAGE_DIR = Path(__file__).resolve().parent
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def available() -> list[str]:
    """Names of the methods in this package (a module with a schema beside it), sorted."""
    names = (p.name.removesuffix(".schema.yaml") for p in PACKAGE_DIR.glob("*.schema.yaml"))
    return sorted(n for n in names if _NAME.match(n) and (PACKAGE_DIR / f"{n}.py").is_file())


def schema_path(name: str) -> Path:
    return PACKAGE_DIR / f"{name}.schema.yaml"


@dataclass(frozen=True)
class Spec:
    """The ``x-wormflow`` block of a method's schema."""

    name: str
    seeded: bool  # trained once per configured seed (False: deterministic, the first seed only)
    gpu: bool  # training and scoring jobs ask for a GPU where the configured device is cuda
    code: tuple[str, ...]  # package files (relative to wormflow/) a trained model depends on, besides its own


@cache
def spec(name: str) -> Spec:
    """What the workflow needs to plan ``name``'s jobs (from its schema; no torch)."""
    if name not in available():
        raise KeyError(f"unknown method {name!r}; known: {', '.join(available())}")
    block = yaml.safe_load(schema_path(name).read_text()).get("x-wormflow", {})
    return Spec(name, bool(block.get("seeded", True)), bool(block.get("gpu", True)), tuple(block.get("code", ())))


@cache
def get(name: str) -> Method:
    """The method called ``name`` (``KeyError`` naming the known ones if there is none)."""
    if name not in available():
        raise KeyError(f"unknown method {name!r}; known: {', '.join(available())}")
    method = importlib.import_module(f"{__name__}.{name}").METHOD
    if method.name != name:
        raise ValueError(f"wormflow/methods/{name}.py defines a method called {method.name!r}")
    return method


def enabled(config: dict) -> list[str]:
    """The enabled methods, in the order of the config's ``methods`` section."""
    return [m for m, section in config["methods"].items() if section.get("enabled", True)]
