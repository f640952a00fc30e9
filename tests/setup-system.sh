#!/usr/bin/env bash
# System parts the tests need beyond the Python environment (called by `make test`):
#   * a real single-node SLURM cluster (munge, slurmctld, slurmd, slurmdbd + private MariaDB,
#     a fake GPU gres) for tests/slurm/, started by tests/slurm/start-local-slurm.sh;
#   * Debian's chromium for the headless-browser test of the report.
# Both need root (apt, daemons). Without root this prints what is skipped; the tests that
# need the missing parts then skip with a reason (CI sets WORMFLOW_REQUIRE_ALL=1 to fail instead).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "setup-system: not root: SLURM and chromium are not set up; tests/slurm and the browser test will skip" >&2
    exit 0
fi
if ! command -v chromium >/dev/null 2>&1; then
    echo "setup-system: installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
bash "$here/slurm/start-local-slurm.sh"
