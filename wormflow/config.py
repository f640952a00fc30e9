"""Loading and validating the workflow configuration outside Snakemake (CLI, benchmarks).

The workflow validates with ``snakemake.utils.validate``; this module applies
the same JSON schema (``wormflow/config.schema.yaml``) with ``jsonschema`` so
that the command-line tools and the benchmarks refuse exactly what the
workflow refuses.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"


class ConfigError(ValueError):
    """A configuration that does not match the schema; the message names the key."""


def deep_merge(base: dict, overlay: dict) -> dict:
    """Merge ``overlay`` into a copy of ``base`` (dicts recursively, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate(config: dict) -> dict:
    """Validate ``config`` against the schema; raise :class:`ConfigError` naming the offending key.

    ``jsonschema`` is a dependency (and Snakemake's); where it is missing (a bare
    GPU image running a benchmark) the config is used unvalidated, with a warning.
    """
    try:
        import jsonschema
    except ImportError:
        import warnings

        warnings.warn("jsonschema is not installed: the configuration is not validated", stacklevel=2)
        return config

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"invalid config at {where}: {e.message}")
    return config


def load_config(paths: list[str | os.PathLike] | None = None, overrides: dict | None = None) -> dict:
    """``config.yaml`` merged with the given overlay files (in order) and overrides, validated."""
    files = [DEFAULT_CONFIG, *(paths or [])]
    config: dict = {}
    for path in files:
        with open(path) as fh:
            config = deep_merge(config, yaml.safe_load(fh) or {})
    if overrides:
        config = deep_merge(config, overrides)
    return validate(config)
