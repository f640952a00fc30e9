"""End-to-end checks of wormflow's SLURM profile against a REAL SLURM cluster.

The cluster is the single-node one of tests/slurm/start-local-slurm.sh (run it
as root first; ~25 s from scratch, ~1 s when already up). The tiny fixture
workflow tests/slurm/fixture/Snakefile has GPU rules named like wormflow's
(train, score_shard with a {shard} wildcard) and localrules (gather, all).
Every run goes through the profile as users install and run it, installed into a
temporary HOME / XDG_CONFIG_HOME with the test cluster's site fields and tuning
(slurm_helpers.TEST_SETTINGS):

    wormflow profile install slurm --partition debug --account root --set ...
    snakemake --profile slurm

The cluster tests (marked `slurm`) are skipped unless WORMFLOW_SLURM=1 is set
(CI: then a missing cluster is a failure, not a skip) or a SLURM cluster
answers `sinfo`. Wall time ~2.5 min: each snakemake run is dominated by the
executor plugin's polling and by the ~9 s a job needs to start snakemake
twice inside its allocation. tests/test_profile_install.py checks the profile
itself without a cluster. Each test copies the fixture into its own tmp_path.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # slurm_helpers, whatever pytest's import mode

from slurm_helpers import (  # noqa: E402
    FIXTURE,
    cluster_mark,
    error_blocks,
    format_jobs,
    install_profile,
    job_info_wildcards,
    require_cluster,
    run_snakemake,
    sacct_jobs,
)

needs_cluster = cluster_mark()  # tests that submit to SLURM (with pytest.mark.slurm)
GPU_RULES = {"train", "score_shard"}  # in the fixture; the profile gives them gpu: 1
LOCAL_RULES = {"gather", "all"}
RUN_TIMEOUT_S = 240  # one fixture run takes 20-60 s; SIGINT after this


@pytest.fixture(scope="module")
def cluster():
    """Fails (rather than hangs) when WORMFLOW_SLURM=1 but nothing answers."""
    require_cluster()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh copy of the fixture workflow."""
    dest = tmp_path / "wf"
    shutil.copytree(FIXTURE, dest)
    return dest


@pytest.fixture(scope="module")
def profile_env(tmp_path_factory) -> dict[str, str]:
    """HOME and XDG_CONFIG_HOME with `wormflow profile install slurm` done for the test cluster."""
    return install_profile(tmp_path_factory.mktemp("home"))


def _run(workdir: Path, *args: str, name: str, env: dict[str, str]):
    run = run_snakemake(list(args), cwd=workdir, timeout_s=RUN_TIMEOUT_S, log_file=workdir.parent / f"{name}.log", env=env)
    assert not run.timed_out, f"snakemake did not finish within {RUN_TIMEOUT_S}s\n{run.describe()}"
    assert run.run_id, f"no 'SLURM run ID' in the output: was the slurm executor used?\n{run.describe()}"
    print(f"{name}: exit {run.returncode} in {run.seconds:.1f}s, SLURM job name {run.run_id}")
    return run


@pytest.mark.slurm
@needs_cluster
def test_gpu_and_wildcard_jobs_run_as_slurm_jobs(cluster, workdir: Path, profile_env):
    """(a) Every non-local job is a COMPLETED SLURM job; GPU rules were allocated gres/gpu."""
    run = _run(workdir, name="run", env=profile_env)
    assert run.returncode == 0, run.describe()

    jobs = sacct_jobs(run.run_id)
    table = format_jobs(jobs)
    submitted = {(j["rule"], j["wildcards"]) for j in jobs}
    assert submitted == {("train", ""), ("score_shard", "0"), ("score_shard", "1")}, table
    assert not submitted & {(r, "") for r in LOCAL_RULES}, f"a localrule was submitted to SLURM:\n{table}"
    for job in jobs:
        assert job["State"] == "COMPLETED", table
        assert job["Partition"] == "debug" and job["Account"] == "root", table
        if job["rule"] in GPU_RULES:
            assert job["tres"].get("gres/gpu") == "1", f"{job['rule']} got no GPU:\n{table}"
    # the installed test profile's sizes (attempt 1) reached sbatch
    by_rule = {j["rule"]: j for j in jobs}
    assert by_rule["train"]["ReqMem"] == "2000M" and by_rule["train"]["Timelimit"] == "00:10:00", table
    assert by_rule["score_shard"]["ReqMem"] == "1500M", table

    # The work ran inside the allocations (SLURM set CUDA_VISIBLE_DEVICES for the
    # fake GPU); the localrule gather ran in the head process, outside SLURM.
    ids = {j["JobIDRaw"] for j in jobs}
    model = (workdir / "models/vae.txt").read_text().split()
    # CUDA_VISIBLE_DEVICES: one fake GPU's index (the node has one or two)
    assert re.fullmatch(r"gpus=\d", model[1]) and model[0].removeprefix("job=") in ids, model
    summary = (workdir / "summary.txt").read_text()
    assert len(re.findall(r"gpus=\d\b", summary)) == 2 and "gather_job=local" in summary, summary

    # SLURM logs are kept under logs/slurm/rule_<rule>/<wildcards>/<jobid>.log
    for job in jobs:
        log = workdir / "logs/slurm" / f"rule_{job['rule']}" / job["wildcards"] / f"{job['JobIDRaw']}.log"
        assert log.is_file(), f"missing SLURM log {log}"


@pytest.mark.slurm
@needs_cluster
def test_failure_is_retried_reported_and_resumed(cluster, workdir: Path, profile_env):
    """(b) score_shard {shard=1} fails twice: the profile's retries: 1 resubmits it
    with doubled mem/runtime (attempt 2); the final failure is reported with the
    rule, its wildcards, the SLURM job id and the log paths; keep-going lets the
    rest finish; a rerun submits only that job, which then succeeds."""
    first = _run(workdir, "--config", "fail_shard=1", "fail_times=2", name="run-fail", env=profile_env)
    assert first.returncode != 0, first.describe()
    out = first.output

    jobs = sacct_jobs(first.run_id)
    table = format_jobs(jobs)
    others = sorted((j["rule"], j["wildcards"], j["State"]) for j in jobs if (j["rule"], j["wildcards"]) != ("score_shard", "1"))
    assert others == [("score_shard", "0", "COMPLETED"), ("train", "", "COMPLETED")], table
    failed = [j for j in jobs if (j["rule"], j["wildcards"]) == ("score_shard", "1")]
    assert [j["State"] for j in failed] == ["FAILED", "FAILED"], table
    # resources grow with `attempt` (test profile: mem_mb 1500 * attempt, runtime 10 * attempt)
    assert [j["ReqMem"] for j in failed] == ["1500M", "3000M"], table
    assert [j["Timelimit"] for j in failed] == ["00:10:00", "00:20:00"], table
    assert all(j["tres"].get("gres/gpu") == "1" for j in failed), table
    assert "Trying to restart job" in out, first.describe()

    # the report of the final failure (the retry's SLURM job)
    last = failed[-1]["JobIDRaw"]
    (sub,) = [s for s in first.submissions if s.slurm_jobid == last]
    slurm_log = f"logs/slurm/rule_score_shard/1/{last}.log"  # logs/slurm/rule_<rule>/<wildcards>/<jobid>.log
    assert sub.log.endswith(slurm_log), sub
    blocks = [b for b in error_blocks(out, "score_shard") if f"external_jobid: {last}" in b]
    assert len(blocks) == 1, f"no 'Error in rule score_shard' block for SLURM job {last}\n{first.describe()}"
    block = blocks[0]
    assert f"SLURM-job '{last}' failed, SLURM status is: 'FAILED'" in block, block
    assert f"jobid: {sub.snakemake_jobid}" in block, block
    assert slurm_log in block and "logs/score_shard/1.log" in block and "scores/shard_1.txt" in block, block
    # snakemake's error block has no 'wildcards:' line; the job-info block it
    # printed when submitting that job (same snakemake jobid) has
    assert job_info_wildcards(out, "score_shard", sub.snakemake_jobid) == "shard=1", first.describe()
    # show-failed-logs prints the rule's own log
    assert "score_shard 1: failing on purpose (2 of 2)" in out, first.describe()
    assert (workdir / "scores/shard_0.txt").exists(), "keep-going: the other shard must still finish"
    assert not (workdir / "summary.txt").exists()

    # rerun: only the failed job is submitted (attempt 1 again), and it passes now
    second = _run(workdir, "--config", "fail_shard=1", "fail_times=2", name="run-resume", env=profile_env)
    assert second.returncode == 0, second.describe()
    jobs = sacct_jobs(second.run_id)
    assert [(j["rule"], j["wildcards"], j["State"], j["ReqMem"]) for j in jobs] == [("score_shard", "1", "COMPLETED", "1500M")], (
        format_jobs(jobs)
    )
    assert "gather_job=local" in (workdir / "summary.txt").read_text()
