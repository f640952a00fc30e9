"""Shared fixtures: paths to the repository and to the real BBBC010 data.

The real data come from one of two places, with the same layout:

* the full data beside the repository, ``../shared/data/bbbc010`` (read-only; ``WORMFLOW_BBBC010``
  names another place), which CI has;
* the small subset in the repository, ``tests/data/bbbc010`` (made from the full data by
  ``tests/data/make_fixture.py``), which every clone has.

``bbbc010`` is the full data when present and the subset otherwise; ``bbbc010_full`` is the full
data or a skip (CI, with ``WORMFLOW_REQUIRE_ALL=1``, counts a skip as a failure).
"""

import json
import os
import sys
from pathlib import Path

import pytest

# Test helpers (e.g. ``oddfiles``) are imported as top-level modules from any test directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
BBBC010_ENV = "WORMFLOW_BBBC010"
BBBC010_FULL = Path(os.environ.get(BBBC010_ENV) or REPO.parent / "shared" / "data" / "bbbc010").resolve()
BBBC010_SUBSET = REPO / "tests" / "data" / "bbbc010"


def is_bbbc010(root: Path) -> bool:
    return (root / "labeled" / "train").is_dir() and (root / "batches").is_dir()


def is_subset(root: Path) -> bool:
    """Whether ``root`` is a subset made by ``tests/data/make_fixture.py`` (its summary says so)."""
    summary = root / "labeled" / "summary.json"
    return summary.is_file() and "fixture" in json.loads(summary.read_text())


def bbbc010_source() -> tuple[Path, str]:
    """``(root, description)`` of the real data the ``bbbc010`` fixture gives: the full data when
    present, else the in-repository subset; a ``WORMFLOW_BBBC010`` that names nothing is not replaced."""
    if is_bbbc010(BBBC010_FULL):
        return BBBC010_FULL, f"{'a subset' if is_subset(BBBC010_FULL) else 'the full data'} at {BBBC010_FULL}"
    if os.environ.get(BBBC010_ENV):
        return BBBC010_FULL, f"none: {BBBC010_ENV}={os.environ[BBBC010_ENV]} names no BBBC010 data"
    return BBBC010_SUBSET, f"the in-repository subset {BBBC010_SUBSET} (no full data at {BBBC010_FULL})"


def pytest_report_header(config):
    return f"real BBBC010 data: {bbbc010_source()[1]}"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def bbbc010() -> Path:
    """The real BBBC010 data (read-only): the full data beside the repository when present, else the
    in-repository subset ``tests/data/bbbc010`` (same layout, fewer files)."""
    root, what = bbbc010_source()
    if not is_bbbc010(root):
        pytest.fail(f"real data not found: {what}")
    return root


@pytest.fixture(scope="session")
def bbbc010_full() -> Path:
    """The full BBBC010 data, for the few tests that need all of it; a skip when they are absent."""
    if not is_bbbc010(BBBC010_FULL):
        pytest.skip(
            f"needs the full BBBC010 data, not found at {BBBC010_FULL} (../shared/data/bbbc010 beside the "
            f"repository, or set {BBBC010_ENV}); the in-repository subset tests/data/bbbc010 is not enough"
        )
    if is_subset(BBBC010_FULL):
        pytest.skip(f"needs the full BBBC010 data; {BBBC010_FULL} is a subset made by tests/data/make_fixture.py")
    return BBBC010_FULL


def pytest_sessionfinish(session, exitstatus):
    """In CI (WORMFLOW_REQUIRE_ALL=1) a skipped test is a failure: every part must really have run."""
    if os.environ.get("WORMFLOW_REQUIRE_ALL") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"WORMFLOW_REQUIRE_ALL=1: {len(skipped)} test(s) skipped, which CI counts as failure", red=True)
        for rep in skipped:
            reporter.write_line(
                f"  skipped: {rep.nodeid}: {rep.longrepr[-1] if isinstance(rep.longrepr, tuple) else rep.longrepr}"
            )
        session.exitstatus = 1
