"""Glue for the Snakemake scripts: logging into the rule's log file, thread limits, error reporting."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable


def run(smk, step: Callable[[object], object]) -> None:
    """Run ``step(snakemake)`` with stderr and logging sent to ``snakemake.log[0]``."""
    log_path = smk.log[0] if len(smk.log) else None
    if log_path:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        stream = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stderr = stream
    else:
        stream = sys.stderr
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=stream,
        force=True,
    )
    threads = max(1, int(getattr(smk, "threads", 1) or 1))
    # torch (imported later, only by the steps that need it) reads these at import time
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    log = logging.getLogger("wormflow.job")
    log.info("rule %s wildcards %s threads %d", smk.rule, dict(smk.wildcards.items()), threads)
    t0 = time.perf_counter()
    try:
        step(smk)
    except Exception:
        log.exception("rule %s failed", smk.rule)
        raise
    log.info("rule %s done in %.2f s", smk.rule, time.perf_counter() - t0)
