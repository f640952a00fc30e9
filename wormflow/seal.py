"""Sealed batches: a night's cost that does not grow with history.

A batch whose results are complete (gathered scores, summary, thumbnails) is *sealed*: a small JSON
beside its results (:func:`wormflow.paths.seal`) records

* every directory of the batch's tree with its ``mtime_ns`` and ``ctime_ns`` (a file added, removed
  or renamed anywhere in the tree changes its directory's mtime *and* ctime; a forged mtime still
  changes the ctime, which cannot be set back; no file of the batch is listed or ``stat``-ed),
* the number of files and the content digest the manifest had, and its stat fingerprint,
* size, mtime and sha256 of the batch's results (manifest, scores, summary, thumbnails),
* the *identity* that decided those results: the scoring config (shard size, decode limits, fields,
  tiling, HDF5 layout, drift), the enabled methods and primary seed, each scoring model's file
  (size, mtime) and sidecar content, and the per-batch rule scripts,
* a checksum of all of the above.

A later DAG build trusts a batch only when its seal is readable, its checksum right, its identity
today's, every recorded directory unchanged and every result file as recorded; the batch then
leaves the DAG (no manifest checkpoint, no per-shard job, no listing of its files) and only its
summary is read, by the ledger, when the ledger has no row for it.  Anything else (no seal, a corrupt
one, another config or model, a changed directory, a touched result, ``recheck=true``) makes the
batch *open*: it is listed and checked as it always was, and rescored when its content or
identity changed.

What a seal cannot see: a file rewritten in place (same name, its directory untouched).  Such a
change is found by a re-check (``--config recheck=true``, ``wormflow nightly --recheck``), which
lists and hashes every batch again.

The ledger step seals (:func:`seal_batch`) every open batch whose summary it has read, after
checking that the batch's files are exactly those its manifest listed, that the summary was made
from that manifest, and that no directory changed while it looked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import paths as P
from .atomic import atomic_write_text
from .digest import json_digest

log = logging.getLogger(__name__)

VERSION = 1
# Summary statuses of complete results (a count mismatch is never sealed: it is checked every night).
SEALABLE_STATUS = ("ok", "empty", "nothing scorable")
# The per-batch rules' scripts: Snakemake reruns a job when its script changes, so a seal does too.
BATCH_SCRIPTS = ("manifest.py", "decode_shard.py", "score_shard.py", "gather.py", "summarize.py")
SCRIPTS_DIR = Path(__file__).resolve().parents[1] / "scripts"


def _sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stat_or_none(path: str | os.PathLike) -> os.stat_result | None:
    try:
        return os.stat(path, follow_symlinks=False)
    except OSError:
        return None


# --------------------------------------------------------------------------- identity


def scoring_config(config: Mapping, methods: Sequence[str], primary_seed: int) -> dict:
    """The parts of the config that decide a batch's manifest, stores, scores and summary (what the
    per-batch rules take as params); a change of any of them reopens every sealed batch."""
    return {
        "shard_size": config["shard_size"],
        "decode": {k: v for k, v in config["decode"].items() if k != "threads"},
        "fields": config.get("fields"),
        "tiling": config.get("tiling"),
        "hdf5": config.get("hdf5"),
        "drift": config.get("drift"),
        "methods": list(methods),
        "primary_seed": int(primary_seed),
    }


def identity(scoring: Mapping, models: Mapping[str, str], scripts_dir: str | os.PathLike = SCRIPTS_DIR) -> dict:
    """What decided a batch's results now: ``scoring`` (:func:`scoring_config`), every scoring model
    ``{method: model.pt}`` (size, mtime and its sidecar's digest; a retrained model changes all three)
    and the per-batch scripts.  Reads a handful of small files, whatever the history."""
    model_ids = {}
    for method, path in sorted(models.items()):
        st = _stat_or_none(path)
        sidecar = Path(path).with_name("model.json")
        model_ids[method] = {
            "path": str(path),
            "size": st.st_size if st else None,
            "mtime_ns": st.st_mtime_ns if st else None,
            "sidecar_sha256": _sha256_file(sidecar) if sidecar.is_file() else None,
        }
    scripts = {}
    for name in BATCH_SCRIPTS:
        p = Path(scripts_dir) / name
        scripts[name] = _sha256_file(p) if p.is_file() else None
    detail = {"scoring": json_digest(dict(scoring)), "models": model_ids, "scripts": scripts}
    return {"digest": json_digest(detail), "detail": detail}


# --------------------------------------------------------------------------- the seal file


def _checksum(body: Mapping) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _dir_states(root: str | os.PathLike) -> dict[str, list[int]]:
    """``{relpath: [mtime_ns, ctime_ns]}`` of ``root`` and every directory below it (links not followed)."""
    root = str(root)
    out = {}
    for dirpath, dirnames, _ in os.walk(root, followlinks=False):
        st = os.stat(dirpath, follow_symlinks=False)
        rel = os.path.relpath(dirpath, root)
        out["" if rel == "." else rel] = [st.st_mtime_ns, st.st_ctime_ns]
        dirnames.sort()
    return out


def result_files(batch: str) -> dict[str, str]:
    """The results a seal vouches for, by role."""
    coll = P.batch_collection(batch)
    return {
        "manifest": P.manifest(coll),
        "scores": P.scores(coll),
        "summary": P.summary(batch),
        "thumbnails": P.thumbnails(batch),
    }


def read_seal(batch: str) -> dict | None:
    """The batch's seal when it is readable and its checksum right, else None."""
    try:
        with open(P.seal(batch), encoding="utf-8") as fh:
            data = json.load(fh)
        body = {k: v for k, v in data.items() if k != "checksum"}
        if data.get("checksum") != _checksum(body) or data.get("version") != VERSION or data.get("batch") != batch:
            return None
        return data
    except (OSError, ValueError, AttributeError):
        return None


def check(batch: str, root: str | os.PathLike, ident: Mapping) -> tuple[dict | None, str]:
    """``(seal, "")`` when the batch is sealed and nothing it vouches for changed, else ``(None, reason)``.

    Cost: one small JSON, one ``stat`` per directory of the batch's tree and per result file."""
    seal = read_seal(batch)
    if seal is None:
        return None, "no seal" if not os.path.exists(P.seal(batch)) else "seal unreadable or corrupt"
    if seal["identity"] != ident["digest"]:
        return None, "config, models or scripts changed since it was sealed"
    root = str(root)
    dirs = seal.get("dirs") or {}
    if "" not in dirs:
        return None, "seal without the batch directory"
    for rel, (mtime_ns, ctime_ns) in dirs.items():
        st = _stat_or_none(os.path.join(root, rel) if rel else root)
        if st is None or (st.st_mtime_ns, st.st_ctime_ns) != (mtime_ns, ctime_ns):
            return None, f"directory {rel or '.'} changed since it was sealed"
    files = result_files(batch)
    for role, rec in seal["outputs"].items():
        st = _stat_or_none(files[role])
        if st is None or (st.st_size, st.st_mtime_ns) != (rec["size"], rec["mtime_ns"]):
            return None, f"{role} changed or missing since it was sealed"
    return seal, ""


def sealed_batches(root: str | os.PathLike, batches: Sequence[str], ident: Mapping) -> tuple[list[str], dict[str, str]]:
    """``(sealed, reasons)``: the batches a night may leave out, and why each other one is open."""
    sealed, reasons = [], {}
    for b in batches:
        seal, why = check(b, os.path.join(str(root), b), ident)
        if seal is None:
            reasons[b] = why
        else:
            sealed.append(b)
    return sealed, reasons


def seal_batch(batch: str, root: str | os.PathLike, ident: Mapping) -> tuple[bool, str]:
    """Seal an open batch whose results are complete; ``(sealed, why not)``.

    Checks, in this order: the batch's directories (before), its files against the manifest's stat
    fingerprint (a full listing: open batches only), the summary's status and manifest digest
    against the manifest, every result file, the directories again (nothing changed meanwhile)."""
    from .inventory import Manifest, fingerprint, scan

    files = result_files(batch)
    root = str(root)
    try:
        before = _dir_states(root)
        manifest = Manifest.read(files["manifest"])
        if fingerprint(scan(root, labeled=False)) != fingerprint(manifest.entries):
            return False, "its files differ from its manifest's listing"
        summary = json.loads(Path(files["summary"]).read_text(encoding="utf-8"))
        if summary.get("status") not in SEALABLE_STATUS:
            return False, f"status {summary.get('status')!r} is not sealed (checked every night)"
        if summary.get("manifest_digest") != manifest.content_digest():
            return False, "its summary was made from another manifest"
        outputs = output_records(batch)
        if _dir_states(root) != before:
            return False, "its directory changed while it was sealed"
    except (OSError, ValueError, KeyError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    write_seal(batch, before, manifest, outputs, ident)
    return True, ""


def output_records(batch: str) -> dict[str, dict]:
    """Size, mtime and sha256 of each result file of the batch (:func:`result_files`)."""
    out = {}
    for role, path in result_files(batch).items():
        st = os.stat(path)
        out[role] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256_file(path)}
    return out


def write_seal(batch: str, dirs: Mapping[str, list[int]], manifest, outputs: Mapping[str, dict], ident: Mapping) -> None:
    """Write the seal (atomically) from what :func:`seal_batch` checked: the directory states, the
    manifest (a :class:`wormflow.inventory.Manifest`), the result records and the identity."""
    from .inventory import fingerprint

    body = {
        "version": VERSION,
        "batch": batch,
        "dirs": dict(dirs),
        "n_files": len(manifest.entries),
        "content_digest": manifest.content_digest(),
        "stat_fingerprint": fingerprint(manifest.entries),
        "outputs": dict(outputs),
        "identity": ident["digest"],
        "identity_detail": ident["detail"],
    }
    atomic_write_text(P.seal(batch), json.dumps({**body, "checksum": _checksum(body)}, indent=1))


def dir_states(root: str | os.PathLike) -> dict[str, list[int]]:
    """``{relpath: [mtime_ns, ctime_ns]}`` of ``root`` and every directory below it (what a seal records)."""
    return _dir_states(root)


def unseal(batch: str) -> None:
    Path(P.seal(batch)).unlink(missing_ok=True)
