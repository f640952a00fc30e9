"""Helpers the Snakemake rules call at DAG-building time (kept here so they are tested).

Nothing here opens an image or imports torch: DAG building only lists directories and reads
``stat`` data, the manifests and the models' JSON sidecars that earlier runs wrote, so a dry
run over 100,000 images stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import stat
from pathlib import Path

from . import methods
from .config import method_schema_paths
from .digest import code_digest, json_digest
from .inventory import Entry, fingerprint, newest_change_ns, scan
from .names import display_name

log = logging.getLogger(__name__)

BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@=,-]*$")
# Package code every trained model depends on (besides its method's own module, schema and `code`).
TRAINING_CODE = ("train.py", "scoring.py", "runtime.py", "data.py", "artifact.py", "methods/base.py", "methods/__init__.py")


def discover_batches(root: str | os.PathLike) -> tuple[list[str], list[tuple[str, str]]]:
    """Return ``(batches, rejected)``: the usable batch directories in ``root``, and everything else with its reason.

    ``batches`` are names (sorted) of real directories (not symbolic links)
    whose names match :data:`BATCH_NAME` (they become file paths and
    wildcards).  ``rejected`` lists every other entry of ``root`` as a
    ``(display_name, reason)`` tuple, sorted by name - symbolic links (never
    followed), loose files and other non-directories, hidden entries, names
    that are not valid UTF-8 (shown with ``\\xNN`` escapes, see
    :func:`wormflow.names.display_name`) or do not match the pattern, and
    directories that cannot be listed - so nothing in the batches root is
    dropped silently.  A ``root`` that is not a directory gives ``([], [])``.
    """
    root = Path(root)
    if not root.is_dir():
        return [], []
    ok, rejected = [], []
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for d in entries:
        try:
            reason = _not_a_batch(d)
        except FileNotFoundError:
            continue  # removed while listing: no longer in the root
        if reason:
            rejected.append((display_name(d.name), reason))
        else:
            ok.append(d.name)
    for name, reason in rejected:
        log.warning("%s/%s is not a batch: %s", root, name, reason)
    return ok, rejected


_FILE_KINDS = ((stat.S_ISREG, "a file"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def _not_a_batch(d: os.DirEntry) -> str:
    """Why the batches-root entry ``d`` is not a usable batch directory ('' if it is one)."""
    try:
        st = d.stat(follow_symlinks=False)
    except FileNotFoundError:
        raise
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        return "symbolic link, not followed"
    if not stat.S_ISDIR(st.st_mode):
        kind = next((k for test, k in _FILE_KINDS if test(st.st_mode)), "a device or other special file")
        return f"{kind}, not a batch directory"
    try:
        d.name.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if d.name.startswith("."):
        return "hidden entry (name starts with '.')"
    if not BATCH_NAME.match(d.name):
        return f"name does not match {BATCH_NAME.pattern} (batch names become file paths and wildcards)"
    try:
        os.close(os.open(d.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW))
    except FileNotFoundError:
        raise
    except OSError as exc:
        return f"cannot list directory: {exc.strerror or exc}"
    return ""


@functools.cache
def collection_state(root: str, labeled: bool) -> tuple[str, int]:
    """``(stat fingerprint, newest change in ns)`` of a collection, from one scan per DAG build.

    The fingerprint is the manifest job's cheap change detector; the newest change decides
    whether a batch has settled (see :func:`settled_batches`).
    """
    entries = scan(root, labeled=labeled)
    return fingerprint(entries), newest_change_ns(entries)


def settled_batches(
    root: str | os.PathLike, batches: list[str], settle_minutes: float, manifests: dict[str, str], now_ns: int | None = None
):
    """Split ``batches`` into those to process and those deferred ``(name, reason)``: a new or changed
    batch whose newest file changed less than ``settle_minutes`` ago may still be being written by
    the imager.  A batch whose files are exactly as its manifest (``manifests[name]``) listed them is
    never deferred: nothing in it is new."""
    if settle_minutes <= 0:
        return list(batches), []
    import time

    now_ns = time.time_ns() if now_ns is None else now_ns
    ready, deferred = [], []
    for b in batches:
        current, newest = collection_state(str(Path(root) / b), False)
        listed = manifests.get(b)
        if listed and os.path.isfile(listed) and manifest_summary(listed)["stat_fingerprint"] == current:
            ready.append(b)
            continue
        age_min = (now_ns - newest) / 60e9
        if age_min < settle_minutes:
            deferred.append(
                (b, f"deferred: its newest file changed {max(age_min, 0):.1f} min ago (settle time {settle_minutes:g} min)")
            )
        else:
            ready.append(b)
    for name, reason in deferred:
        log.warning("batch %s %s", name, reason)
    return ready, deferred


def method_schemas(config: dict) -> dict[str, Path]:
    """The schema file each method section of the config is validated against."""
    return method_schema_paths(config)


def enabled_methods(config: dict) -> list[str]:
    return methods.enabled(config)


def retrain_methods(config: dict, enabled: list[str]) -> set[str]:
    """The methods whose existing models this run may retrain (config ``retrain``: names or ``all``)."""
    asked = set(config.get("retrain", []))
    unknown = asked - set(enabled) - {"all"}
    if unknown:
        raise ValueError(f"retrain: {', '.join(sorted(unknown))} is not an enabled method ({', '.join(enabled)})")
    return set(enabled) if "all" in asked else asked


def method_seeds(method: str, seeds: list[int]) -> list[int]:
    """The seeds a method is trained with: all of them, or the first for a deterministic method."""
    return list(seeds) if methods.spec(method).seeded else list(seeds[:1])


def image_sizes(config: dict) -> list[int]:
    """Every resolution an image store must hold: each enabled method's."""
    return sorted({int(config["methods"][m]["image_size"]) for m in enabled_methods(config)})


def uses_gpu(method: str) -> bool:
    return methods.spec(method).gpu


@functools.lru_cache(maxsize=4096)
def _manifest_summary(path: str, mtime_ns: int) -> dict:
    with open(path) as fh:
        data = json.load(fh)
    return {
        "n_shards": data["n_shards"],
        "shard_digests": data["shard_digests"],
        # manifests written before data_digest existed: the shard digests stand in for it
        "data_digest": data.get("data_digest") or json_digest({"shards": data["shard_digests"]}),
        "n_files": data["n_files"],
        # latest mtime/ctime of the collection's files (0: manifest from before it was recorded); see
        # inventory.newest_change_ns - for a settle time before a batch that may still be written is scored
        "newest_change_ns": int(data.get("newest_change_ns", 0)),
        # the files and their stat data as listed (compared with a new scan: has anything changed?)
        "stat_fingerprint": fingerprint(Entry(**e) for e in data["entries"]),
    }


def manifest_summary(path: str | os.PathLike) -> dict:
    """Shard count, per-shard and whole-collection content digests, file count and newest change of a manifest (cached by mtime)."""
    path = str(path)
    return _manifest_summary(path, os.stat(path).st_mtime_ns)


@functools.cache
def training_code_digest(method: str) -> str:
    """Digest of the package code a trained ``method`` depends on: a change retrains that method only."""
    own = (f"methods/{method}.py", f"methods/{method}.schema.yaml")
    return code_digest((*TRAINING_CODE, *own, *methods.spec(method).code))


def seal_scoring_config(config: dict, methods: list[str], primary_seed: int) -> dict:
    """The config that decides a batch's results (see :func:`wormflow.seal.scoring_config`)."""
    from .seal import scoring_config

    return scoring_config(config, methods, primary_seed)


def sealed_batches(
    root: str | os.PathLike, batches: list[str], scoring: dict, models: dict[str, str], *, recheck: bool = False
) -> tuple[list[str], dict[str, str]]:
    """``(sealed, reasons)``: the batches this DAG leaves out (:mod:`wormflow.seal`), and why each other is open.

    Nothing is sealed with ``recheck``.  Reads one small seal and ``stat``s a few paths per batch: the
    files of a sealed batch are never listed."""
    from .seal import identity
    from .seal import sealed_batches as check

    if recheck:
        return [], {b: "recheck asked for" for b in batches}
    sealed, reasons = check(root, batches, identity(scoring, models))
    for b, why in reasons.items():
        if why != "no seal":
            log.info("batch %s is checked tonight: %s", b, why)
    return sealed, reasons


def not_one_of(names: list[str]) -> str:
    """A regular-expression prefix that refuses a wildcard equal to one of ``names`` (before ``/`` or the end)."""
    if not names:
        return ""
    return "(?!(?:" + "|".join(re.escape(n) for n in sorted(names)) + ")(?:/|$))"
