"""The REAL wormflow workflow through ``snakemake --profile slurm`` on a real SLURM cluster.

Issue: "snakemake --profile profiles/slurm: training and scoring as GPU jobs on
a real SLURM cluster". The cluster is the single-node one of
tests/slurm/start-local-slurm.sh (2 CPUs, two fake GPUs ``gpu:fakegpu:2``;
the test overlay makes every job a 1-CPU job, so two run side by side).
The workflow runs on the generated demo, sized by tests/configs/tiny.yaml +
tests/slurm/workflow-tiny.yaml (10 SLURM jobs), the way a user runs it: the profile
installed by name into a temporary HOME / XDG_CONFIG_HOME, then exactly ``--profile slurm``:

    wormflow profile install slurm --partition debug --account root --set ...   # slurm_helpers.TEST_SETTINGS
    snakemake --profile slurm -s Snakefile --configfile tests/configs/tiny.yaml tests/slurm/workflow-tiny.yaml

and the same config runs at the same time with ``--profile profiles/local`` in
another tmp directory, as the reference (it mostly overlaps the SLURM run, which
spends much of its time in job start-up and status polling).

1. ``test_jobs_ran_as_slurm_jobs``: every non-local job (decode_shard, train,
   score_shard) was a COMPLETED SLURM job; the GPU rules asked ``--gpus=1``
   (sacct SubmitLine) and were allocated gres/gpu=1, the CPU jobs neither; no
   localrule was submitted; HDF5_USE_FILE_LOCKING=FALSE, which
   rules/common.smk sets in the head process, reached the jobs (``sacct
   --env-vars``: the environment each batch script was launched with).
2. ``test_failed_job_is_reported_and_only_it_reruns``: a garbage model.pt makes
   one score_shard job fail inside SLURM; the report names rule, wildcards, SLURM
   job id and logs; after restoring the model only that job is resubmitted --
   with the profile installed again with ``--gpu-request gres`` and the batch's
   image store removed, so that this rerun has a CPU job (decode_shard) and a
   GPU job that asks ``--gres=gpu:1`` (sacct: gres/gpu=1 for it, none for decode).
3. ``test_outputs_match_local_run``: same files under results/, same HDF5 layout,
   same image ids; scores bit-identical when the trained weights are (training
   on CPU is deterministic across processes at equal thread counts).

The three tests share one module fixture (one SLURM run, one local run). Test 2
changes the SLURM working directory; test 3 compares a snapshot taken right
after the first SLURM run, so the order does not matter. Wall time on 2 idle
CPUs: ~4-5 min (SLURM run ~3 min, the failure/rerun part ~1.5 min).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # slurm_helpers, whatever pytest's import mode

from slurm_helpers import (  # noqa: E402
    REPO,
    THREADS,
    SnakemakeRun,
    cluster_mark,
    error_blocks,
    format_jobs,
    gpu_request,
    install_profile,
    job_info_wildcards,
    job_stats,
    require_cluster,
    run_snakemake,
    sacct_env,
    sacct_jobs,
    sacct_submit_lines,
    snakemake_env,
)

needs_cluster = cluster_mark()  # tests that submit to SLURM (with pytest.mark.slurm)
# timeout: the first test includes the module fixture (SLURM run), the last waits for the local run
pytestmark = [pytest.mark.slurm, needs_cluster, pytest.mark.timeout(1500)]

CONFIGS = (REPO / "tests" / "configs" / "tiny.yaml", Path(__file__).resolve().parent / "workflow-tiny.yaml")
WORKFLOW_ARGS = ["-s", str(REPO / "Snakefile"), "--configfile", *map(str, CONFIGS)]

# what tests/slurm/workflow-tiny.yaml makes: one shard per collection, batch 2 empty
METHODS = ("vae", "gan", "resnet50", "dark_pixels")
DECODED = ("labeled/train", "labeled/dev", "labeled/test", "batches/demo-batch-1")
SCORED = ("labeled/test", "batches/demo-batch-1")
GPU_RULES = {"train", "score_shard"}
SLURM_RULES = GPU_RULES | {"decode_shard"}
LOCAL_RULES = {"all", "demo_data", "manifest", "gather", "summarize", "evaluate", "ledger", "report"}
# the installed test profile's set-threads (THREADS: 1-CPU jobs); the local reference run gets the same
# sacct ReqMem of the installed test profile (slurm_helpers.TEST_MEM), attempt 1
REQ_MEM = {"decode_shard": "1000M", "score_shard": "1500M", "train": "2000M"}

SLURM_TIMEOUT_S = 600  # the first SLURM run: ~3 min on 2 idle CPUs; SIGINT after this
LOCAL_TIMEOUT_S = 900  # the reference run (niced, beside the SLURM run)
SMALL_TIMEOUT_S = 300  # the failing run and the rerun (3 jobs / 1 job)


def _wc(*values: str) -> str:
    """Wildcard values as the plugin writes them into the job comment (and the log dir)."""
    return "_".join(values).replace("/", "_")


EXPECTED_JOBS = (
    {("decode_shard", _wc(c, "0")) for c in DECODED}
    | {("train", _wc(f"{m}/seed0")) for m in METHODS}
    | {("score_shard", _wc(c, "0")) for c in SCORED}  # one job per shard scores every method
)


# --------------------------------------------------------------------------
# the reference run (profiles/local) in the background
# --------------------------------------------------------------------------


class LocalRun:
    """``snakemake --profile profiles/local`` with the same configs, in the background, niced."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.log = workdir.parent / "local-run.log"
        self.cmd = [
            "nice", "-n", "10",  # the SLURM run is the critical path; this one fills idle CPU time
            "timeout", "-s", "INT", "-k", "60", str(LOCAL_TIMEOUT_S),
            sys.executable, "-m", "snakemake", *WORKFLOW_ARGS,
            "--profile", str(REPO / "profiles" / "local"), "--workflow-profile", "none", "--cores", "2",
            "--set-threads", *(f"{rule}={n}" for rule, n in THREADS.items()),  # as the SLURM run's
        ]  # fmt: skip
        self.t0 = time.monotonic()
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=workdir,
                env=snakemake_env(),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.seconds: float | None = None

    def wait(self) -> int:
        try:
            rc = self.proc.wait(timeout=LOCAL_TIMEOUT_S + 120)
        except subprocess.TimeoutExpired:
            self.stop()
            rc = self.proc.returncode
        if self.seconds is None:
            self.seconds = time.monotonic() - self.t0
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def describe(self) -> str:
        return f"command: {' '.join(self.cmd)}\ncwd: {self.workdir}\n{self.log.read_text()[-8000:]}"


# --------------------------------------------------------------------------
# results/ snapshots
# --------------------------------------------------------------------------

_SKIP_TOP = {"logs", "benchmarks"}


def _normalise(rel: str) -> str:
    """TensorBoard names its file events.out.tfevents.<time>.<host>.<pid>.<n>, a score part
    <method>.seed<s>.<key>.h5 (the key has the model's hash): keep the kind only."""
    rel = re.sub(r"(^|/)events\.out\.tfevents\.[^/]+$", r"\1events.out.tfevents.*", rel)
    return re.sub(r"(\.parts/\w+\.seed\d+)\.[0-9a-f]+\.h5$", r"\1.*.h5", rel)


def snapshot(workdir: Path) -> dict[str, dict | None]:
    """results/ (without logs/, benchmarks/): normalised path -> None, or for an HDF5
    file {object name: "group" | (shape, dtype, data)}."""
    import h5py  # only the cluster tests need it here

    root = workdir / "results"
    out: dict[str, dict | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in _SKIP_TOP:
            continue
        key = _normalise(rel.as_posix())
        assert key not in out, f"two files map to {key}"
        if path.suffix != ".h5":
            out[key] = None
            continue
        objects: dict = {}
        with h5py.File(path, "r") as h5:

            def visit(name, obj, objects=objects):
                if isinstance(obj, h5py.Dataset):
                    objects[name] = (obj.shape, str(obj.dtype), obj[()])
                else:
                    objects[name] = "group"

            h5.visititems(visit)
        out[key] = objects
    return out


def _layout(objects: dict) -> dict:
    return {name: (v if v == "group" else v[:2]) for name, v in objects.items()}


def _equal(a, b) -> bool:
    import numpy as np

    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


def _same_weights(a: Path, b: Path) -> bool:
    """Do two model.pt checkpoints hold identical tensors (state_dict) and thresholds?"""
    import torch

    ca, cb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    sa, sb = ca["state_dict"], cb["state_dict"]

    def tensors(state, prefix=""):
        for key, value in state.items():
            if isinstance(value, dict):
                yield from tensors(value, f"{prefix}{key}/")
            elif torch.is_tensor(value):
                yield f"{prefix}{key}", value

    ta, tb = dict(tensors(sa)), dict(tensors(sb))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta) and ca["threshold"] == cb["threshold"]


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@dataclass
class Runs:
    slurm_dir: Path
    slurm: SnakemakeRun
    slurm_snapshot: dict
    local: LocalRun
    home: Path  # HOME with .config/snakemake/slurm (the installed profile)
    env: dict  # HOME and XDG_CONFIG_HOME for snakemake


@pytest.fixture(scope="module")
def cluster():
    require_cluster()


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> Runs:
    base = tmp_path_factory.mktemp("slurm-workflow")
    local = LocalRun(base / "local")
    try:
        slurm_dir = base / "slurm"
        slurm_dir.mkdir()
        home = base / "home"
        env = install_profile(home)  # --gpu-request gpus (the default)
        # Without HDF5_USE_FILE_LOCKING in the head's environment, finding it in the
        # jobs' environment shows that rules/common.smk set it and sbatch passed it on.
        slurm = run_snakemake(
            WORKFLOW_ARGS,
            cwd=slurm_dir,
            timeout_s=SLURM_TIMEOUT_S,
            log_file=base / "slurm-run.log",
            env_remove=("HDF5_USE_FILE_LOCKING",),
            env=env,
        )
        print(f"\nSLURM run: exit {slurm.returncode} in {slurm.seconds:.1f}s, job name {slurm.run_id}")
        assert not slurm.timed_out, f"SLURM run did not finish within {SLURM_TIMEOUT_S}s\n{slurm.describe()}"
        assert slurm.returncode == 0, slurm.describe()
        assert slurm.run_id, f"no 'SLURM run ID' in the output: was the slurm executor used?\n{slurm.describe()}"
        shot = snapshot(slurm_dir)
    except BaseException:
        local.stop()
        raise
    yield Runs(slurm_dir=slurm_dir, slurm=slurm, slurm_snapshot=shot, local=local, home=home, env=env)
    local.stop()  # only if a test was deselected or failed before waiting for it


def _run(workdir: Path, *args: str, name: str, env: dict, timeout_s: int = SMALL_TIMEOUT_S) -> SnakemakeRun:
    run = run_snakemake(
        [*WORKFLOW_ARGS, *args], cwd=workdir, timeout_s=timeout_s, log_file=workdir.parent / f"{name}.log", env=env
    )
    print(f"{name}: exit {run.returncode} in {run.seconds:.1f}s, SLURM job name {run.run_id}")
    assert not run.timed_out, f"snakemake did not finish within {timeout_s}s\n{run.describe()}"
    return run


def _dry_run(workdir: Path, *, name: str, env: dict, show: bool = False) -> dict[str, int]:
    """rule -> job count of a dry run; with ``show`` also check that it lists the failed job."""
    dry = run_snakemake([*WORKFLOW_ARGS, "-n"], cwd=workdir, timeout_s=120, log_file=workdir.parent / f"{name}.log", env=env)
    assert dry.returncode == 0, dry.describe()
    if show:
        assert re.search(r"wildcards: coll=batches/demo-batch-1, shard=0\s*$", dry.output, re.M), dry.describe()
    return job_stats(dry.output)


def _printed_rules(output: str) -> tuple[set[str], set[str]]:
    """Rules snakemake printed as submitted ('rule X:') and as run in the head ('localrule X:')."""
    submitted = set(re.findall(r"^rule (\w+):$", output, re.M))
    local = set(re.findall(r"^local(?:rule|checkpoint) (\w+):$", output, re.M))
    return submitted, local


# --------------------------------------------------------------------------
# 1. the jobs
# --------------------------------------------------------------------------


def test_jobs_ran_as_slurm_jobs(runs: Runs):
    run = runs.slurm
    jobs = sacct_jobs(run.run_id)
    table = format_jobs(jobs)
    print(table)

    # every non-local job of the run, and nothing else, was a SLURM job, once
    submitted = [(j["rule"], j["wildcards"]) for j in jobs]
    assert sorted(submitted) == sorted(EXPECTED_JOBS), table
    assert len(run.submissions) == len(jobs), run.describe()
    submit_lines = sacct_submit_lines(run.run_id)
    for job in jobs:
        assert job["State"] == "COMPLETED" and job["ExitCode"] == "0:0", table
        assert job["Partition"] == "debug" and job["Account"] == "root", table
        assert job["ReqMem"] == REQ_MEM[job["rule"]], table
        # --cpus-per-task = the job's threads (the test overlay's set-threads)
        assert job["tres"].get("cpu") == str(THREADS[job["rule"]]), table
        # --gpu-request gpus: the GPU rules ask `sbatch --gpus=1`, the CPU jobs for no GPU at all
        request = gpu_request(submit_lines[job["JobIDRaw"]])
        if job["rule"] in GPU_RULES:
            assert request == "--gpus=1", (job["rule"], submit_lines[job["JobIDRaw"]][:600])
            assert job["tres"].get("gres/gpu") == "1", f"{job['rule']} got no GPU:\n{table}"
        else:
            assert request is None, (job["rule"], submit_lines[job["JobIDRaw"]][:600])
            assert "gres/gpu" not in job["tres"], f"{job['rule']} is a CPU job but got a GPU:\n{table}"
        log = runs.slurm_dir / "logs/slurm" / f"rule_{job['rule']}" / job["wildcards"] / f"{job['JobIDRaw']}.log"
        assert log.is_file(), f"missing SLURM log {log}"

    # localrules ran in the head process, never as SLURM jobs
    assert not {j["rule"] for j in jobs} & LOCAL_RULES, table
    printed_submitted, printed_local = _printed_rules(run.output)
    assert printed_submitted == SLURM_RULES, run.describe()
    assert printed_local == LOCAL_RULES, run.describe()
    assert len(re.findall(r"^rule \w+:$", run.output, re.M)) == len(jobs), run.describe()  # one job-info block per SLURM job
    assert "Job stats:" in run.output

    # the work ran inside the allocation: the job's Snakemake ran the rule there
    for job in jobs:
        slurm_log = (
            runs.slurm_dir / "logs/slurm" / f"rule_{job['rule']}" / job["wildcards"] / f"{job['JobIDRaw']}.log"
        ).read_text()
        assert f"--target-jobs {job['rule']}:" in slurm_log and "--executor slurm-jobstep" in slurm_log, slurm_log[-3000:]

    # HDF5_USE_FILE_LOCKING=FALSE (rules/common.smk, head process) reached every job
    for job in jobs:
        env = sacct_env(job["JobIDRaw"])
        assert env, f"sacct --env-vars shows nothing for {job['JobIDRaw']}: AccountingStoreFlags=job_env missing?"
        assert env.get("HDF5_USE_FILE_LOCKING") == "FALSE", (job["rule"], job["wildcards"], sorted(env))

    # the outputs are complete
    results = runs.slurm_dir / "results"
    for rel in ("report.html", "report.json", "batches.tsv", "eval/metrics.json"):
        assert (results / rel).is_file(), rel
    for method in METHODS:
        assert (results / f"models/{method}/seed0/model.pt").is_file()


# --------------------------------------------------------------------------
# 2. a job that fails inside SLURM
# --------------------------------------------------------------------------


def test_failed_job_is_reported_and_only_it_reruns(runs: Runs):
    """A garbage results/models/vae/seed0/model.pt (same mtime, so Snakemake sees no
    change), with demo-batch-1's scores.h5, its summary and the ledger removed (a missing
    intermediate alone is not redone while what depends on it is there): the
    batch's score_shard job is submitted and fails when loading the vae model.
    The failure names rule, wildcards, SLURM job id and both logs. With the model
    restored, a rerun submits only the failed job (the other methods' score parts
    are reused)."""
    wd = runs.slurm_dir
    results = wd / "results"
    model = results / "models/vae/seed0/model.pt"
    batch_scores = results / "batches/demo-batch-1/scores.h5"
    original, st = model.read_bytes(), model.stat()

    def put_model(data: bytes) -> None:
        model.chmod(0o644)  # protected() output: read-only
        model.write_bytes(data)
        os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
        model.chmod(st.st_mode & 0o777)

    batch_scores.unlink()
    (results / "batches/demo-batch-1/summary.json").unlink()
    (results / "batches.tsv").unlink()
    # the plan: that night's scoring and what depends on it, nothing upstream
    # (more here means the workflow's code or config changed since the first run)
    plan = _dry_run(wd, name="dry-run-before", env=runs.env)
    assert plan == {"all": 1, "gather": 1, "summarize": 1, "ledger": 1, "report": 1, "score_shard": 1}, (
        f"more to do than demo-batch-1's scoring (did the workflow's code or config change since the first run?): {plan}"
    )
    put_model(b"this is not a torch checkpoint\n")
    try:
        # --retries 0: one attempt is enough here (test_slurm_mechanics covers the retry)
        first = _run(wd, "--retries", "0", name="run-fail", env=runs.env)
    finally:
        put_model(original)

    assert first.returncode != 0, first.describe()
    out = first.output
    jobs = sacct_jobs(first.run_id)
    table = format_jobs(jobs)
    print(table)
    failed_wc = _wc("batches/demo-batch-1", "0")
    assert [(j["rule"], j["wildcards"], j["State"]) for j in jobs] == [("score_shard", failed_wc, "FAILED")], table
    assert all(j["tres"].get("gres/gpu") == "1" for j in jobs), table
    (failed,) = [j for j in jobs if j["State"] == "FAILED"]
    slurm_jobid = failed["JobIDRaw"]

    # the report: rule, SLURM job id, SLURM log, rule log, output; wildcards in the job-info block
    (sub,) = [s for s in first.submissions if s.slurm_jobid == slurm_jobid]
    slurm_log = f"logs/slurm/rule_score_shard/{failed_wc}/{slurm_jobid}.log"
    rule_log = "results/logs/score_shard/batches/demo-batch-1/0.log"
    assert sub.log.endswith(slurm_log), sub
    assert (wd / slurm_log).is_file()
    blocks = [b for b in error_blocks(out, "score_shard") if f"external_jobid: {slurm_jobid}" in b]
    assert len(blocks) == 1, f"no 'Error in rule score_shard' block for SLURM job {slurm_jobid}\n{first.describe()}"
    block = blocks[0]
    assert f"SLURM-job '{slurm_jobid}' failed, SLURM status is: 'FAILED'" in block, block
    assert f"jobid: {sub.snakemake_jobid}" in block, block
    assert slurm_log in block and rule_log in block, block
    assert "results/batches/demo-batch-1/shards/0.scores.json" in block, block
    wildcards = job_info_wildcards(out, "score_shard", sub.snakemake_jobid)
    assert wildcards == "coll=batches/demo-batch-1, shard=0", first.describe()
    # show-failed-logs prints the rule's log, which has the job's traceback
    assert "rule score_shard failed" in out and "Traceback" in out, first.describe()
    # the other methods' score parts of the first run are still there (reused by the rerun); no gather
    for m in ("gan", "resnet50", "dark_pixels"):
        assert list((results / "batches/demo-batch-1/shards/0.parts").glob(f"{m}.seed0.*.h5")), m
    assert not batch_scores.exists()
    # a report this morning all the same (the onerror hook, in the head process): what completed,
    # and the failed batch with the rule, shard, rule log and SLURM log of its failed job
    ledger = json.loads((results / "ledger.json").read_text())
    (row,) = ledger["not_processed"]
    assert (row["batch"], row["kind"], row["failed_rule"], row["failed_shard"]) == ("demo-batch-1", "failed", "score_shard", 0), (
        row
    )
    assert row["log"] == rule_log and row["slurm_log"] == slurm_log, row
    assert [b["batch"] for b in ledger["batches"]] == ["demo-batch-2"]
    assert "failed in rule score_shard, shard 0" in (results / "report.html").read_text()

    # what is left to do: the one failed job, then the localrules downstream of it
    plan = _dry_run(wd, name="dry-run-after", env=runs.env, show=True)
    assert plan == {"all": 1, "gather": 1, "summarize": 1, "ledger": 1, "report": 1, "score_shard": 1}, plan

    # The rerun with the profile installed again for a site that takes only --gres, and the batch's
    # image store removed: a CPU job (decode_shard) and a GPU job (score_shard) in gres mode.
    env = install_profile(runs.home, "--gpu-request", "gres", "--force")
    assert "gres: \"'gpu:1'\"" in (runs.home / ".config/snakemake/slurm/config.yaml").read_text()
    (results / "batches/demo-batch-1/shards/0.images.h5").unlink()
    second = _run(wd, name="run-resume", env=env)
    assert second.returncode == 0, second.describe()
    jobs = sacct_jobs(second.run_id)
    table = format_jobs(jobs)
    print(table)
    assert sorted((j["rule"], j["wildcards"], j["State"]) for j in jobs) == [
        ("decode_shard", failed_wc, "COMPLETED"),
        ("score_shard", failed_wc, "COMPLETED"),
    ], table
    assert len(second.submissions) == 2, second.describe()
    submit_lines = sacct_submit_lines(second.run_id)
    for job in jobs:
        request = gpu_request(submit_lines[job["JobIDRaw"]])
        if job["rule"] == "score_shard":
            assert request == "--gres=gpu:1", submit_lines[job["JobIDRaw"]][:600]
            assert job["tres"].get("gres/gpu") == "1", table
        else:
            assert request is None and "gres/gpu" not in job["tres"], table
    assert _printed_rules(second.output) == (
        {"decode_shard", "score_shard"},
        {"gather", "summarize", "ledger", "report", "all"},
    ), second.describe()

    # the rerun's batch scores equal the first SLURM run's
    again = snapshot(wd)["batches/demo-batch-1/scores.h5"]
    before = runs.slurm_snapshot["batches/demo-batch-1/scores.h5"]
    assert _layout(again) == _layout(before)
    assert all(v == "group" or _equal(v[2], before[k][2]) for k, v in again.items()), "rerun changed the scores"


# --------------------------------------------------------------------------
# 3. same outputs as a local run
# --------------------------------------------------------------------------


def test_outputs_match_local_run(runs: Runs):
    rc = runs.local.wait()
    print(f"local run (profiles/local, niced, beside the SLURM run): exit {rc} in {runs.local.seconds:.1f}s")
    assert rc == 0, runs.local.describe()
    local = snapshot(runs.local.workdir)
    slurm = runs.slurm_snapshot

    assert sorted(slurm) == sorted(local), (
        f"only SLURM: {sorted(set(slurm) - set(local))}\nonly local: {sorted(set(local) - set(slurm))}"
    )
    h5_files = sorted(f for f, v in slurm.items() if v is not None)
    # the image stores, the score parts (kept for reuse) and the collections' gathered scores
    assert h5_files == sorted(
        [f"{c}/shards/0.images.h5" for c in DECODED]
        + [f"{c}/shards/0.parts/{m}.seed0.*.h5" for c in SCORED for m in METHODS]
        + [f"{c}/scores.h5" for c in (*SCORED, "batches/demo-batch-2")]
        + ["eval/gallery.h5"]
    ), h5_files
    for f in h5_files:
        assert _layout(slurm[f]) == _layout(local[f]), f"HDF5 layout differs in {f}"

    # same images, in the same order, everywhere (ids, paths, labels, hashes, pixels)
    id_like = re.compile(r"(^|/)(ids|paths|labels|sha256|images/\d+|orig_hw)$")
    n_ids = 0
    for f in h5_files:
        for name, v in slurm[f].items():
            if v != "group" and id_like.search(name):
                n_ids += name.endswith("ids")
                assert _equal(v[2], local[f][name][2]), f"{f}:{name} differs between SLURM and local"
    assert n_ids >= 10, n_ids

    # scores: identical if training gave identical weights (CPU training is deterministic
    # across processes with the same thread count); otherwise they may differ
    same_weights = {
        m: _same_weights(*(d / f"results/models/{m}/seed0/model.pt" for d in (runs.slurm_dir, runs.local.workdir)))
        for m in METHODS
    }
    differing = sorted(
        f"{f}:{name}" for f in h5_files for name, v in slurm[f].items() if v != "group" and not _equal(v[2], local[f][name][2])
    )
    print(f"identical trained weights SLURM vs local: {same_weights}; differing HDF5 datasets: {differing or 'none'}")
    if all(same_weights.values()):
        assert not differing, f"same weights but different data: {differing}"
