"""Shared fixtures: paths to the repository and to the real BBBC010 data beside it."""

import os
import sys
from pathlib import Path

import pytest

# Test helpers (e.g. ``oddfiles``) are imported as top-level modules from any test directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
BBBC010 = Path(os.environ.get("WORMFLOW_BBBC010", REPO.parent / "shared" / "data" / "bbbc010")).resolve()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def bbbc010() -> Path:
    """The real BBBC010 patches (read-only, ../shared/data/bbbc010). Missing data is an error, not a skip."""
    if not (BBBC010 / "labeled" / "train").is_dir():
        pytest.fail(f"real data not found at {BBBC010}: the tests need ../shared/data/bbbc010 (or set WORMFLOW_BBBC010)")
    return BBBC010


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
