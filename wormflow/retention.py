"""Retention of what grows with history but is not a result (config ``retention``; see README).

Shard image stores are dropped when their batch is sealed (:func:`wormflow.ledger.seal_complete_batches`);
the report's detail is bounded in :mod:`wormflow.report`; SLURM job logs are pruned here.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def prune_old_files(root: str | os.PathLike, days: float, now: float | None = None) -> list[str]:
    """Delete the regular files below ``root`` last modified more than ``days`` days ago, then the
    directories left empty (never ``root`` itself, never through a symbolic link); return the files removed."""
    root = Path(root)
    if not root.is_dir() or root.is_symlink():
        return []
    cutoff = (time.time() if now is None else now) - days * 86400
    removed = []
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False, followlinks=False):
        for name in filenames:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if path.is_file() and not path.is_symlink() and st.st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed.append(str(path))
        if Path(dirpath) != root:
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)  # only when empty
    return removed
