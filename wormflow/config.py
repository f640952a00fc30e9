"""Loading and validating the workflow configuration outside Snakemake (CLI, benchmarks).

The workflow validates with ``snakemake.utils.validate`` (``rules/common.smk``); this module
applies the same JSON schemas with ``jsonschema`` so that the command-line tools and the
benchmarks refuse exactly what the workflow refuses: ``wormflow/config.schema.yaml`` for the
whole file, then each method's section against ``wormflow/methods/<name>.schema.yaml``
(:func:`method_schema_paths` — the same list the workflow validates with).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from . import methods

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


def method_schema_paths(config: dict) -> dict[str, Path]:
    """The schema of every method named in ``config["methods"]``; an unknown name is a ConfigError."""
    known = methods.available()
    unknown = [m for m in config.get("methods", {}) if m not in known]
    if unknown:
        raise ConfigError(f"invalid config at methods: unknown method(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return {m: methods.schema_path(m) for m in config.get("methods", {})}


def _validate_file(data: dict, schema_path: Path, where: str) -> None:
    import jsonschema
    from referencing import Registry, Resource

    def retrieve(uri: str) -> Resource:
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return Resource.from_contents(yaml.safe_load(Path(url2pathname(urlparse(uri).path)).read_text()))

    schema = yaml.safe_load(schema_path.read_text())
    schema["$id"] = schema_path.resolve().as_uri()
    registry = Registry(retrieve=retrieve).with_resource(schema["$id"], Resource.from_contents(schema))
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        path = ".".join(str(p) for p in (*([where] if where else []), *e.absolute_path)) or "(top level)"
        raise ConfigError(f"invalid config at {path}: {e.message}")


def validate(config: dict) -> dict:
    """Validate ``config`` against the schemas; raise :class:`ConfigError` naming the offending key.

    ``jsonschema`` is a dependency (and Snakemake's); where it is missing (a bare
    GPU image running a benchmark) the config is used unvalidated, with a warning.
    """
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        import warnings

        warnings.warn("jsonschema is not installed: the configuration is not validated", stacklevel=2)
        return config
    _validate_file(config, SCHEMA_PATH, "")
    for name, path in method_schema_paths(config).items():
        _validate_file(config["methods"][name], path, f"methods.{name}")
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
