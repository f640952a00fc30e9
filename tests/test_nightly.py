"""Nightly reprocessing: what a night does to an existing results tree, and what it survives.

One base run per module trains the three methods (tiny config) on a subset of the real BBBC010
labeled set and scores two real batches (2026-11-20, 2026-11-21); every test works on a copy
of that working directory (``nightly_helpers.copy_case``: results, Snakemake metadata and the
batches, mtimes kept).  The nights themselves are run as a lab runs them::

    python -m wormflow.cli nightly --results <wd>/results -- -s Snakefile --directory <wd> --profile profiles/local ...

1. A new batch is processed alone (dry run and real run); the old batches' files stay byte-identical;
   a night with nothing new does nothing; changed content (mtime forged back) is rescored, a touch is not.
2. Bad input (odd-but-valid files, bad files, links, FIFOs, hidden and non-UTF-8 names, an empty batch,
   a batch of only bad files) is scored or quarantined, file by file, and the night succeeds.
3. A scoring job and (separately) a training job with its Snakemake head are SIGKILLed at a random
   point; the next nightly run recovers (no manual ``--unlock``) and gives exactly the uninterrupted results.
4. Two nightly runs at once on the same results: one runs, the other exits 75 at once.
5. Trust: a pickle with code in place of ``model.pt`` is refused; missing data paths are named; file
   names never reach a shell.

``WORMFLOW_FAULT_SEED`` fixes the random kill points (the seed is printed in failure messages).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from markupsafe import escape
from nightly_helpers import (
    REPO,
    RUN_TIMEOUT,
    copy_case,
    entries_below,
    jobs_in,
    kill_tree,
    nightly,
    nightly_cmd,
    pin_code,
    popen,
    process_holding,
    rules_of,
    settle,
    sha256,
    snakemake,
    snakemake_args,
    snakemake_cmd,
    snapshot,
    stored_name,
    wait_for,
    write_overlay,
)
from oddfiles import NAME_HTML, make_odd_and_bad_files, noisy_rgb
from PIL import Image

from wormflow.artifact import Artifact
from wormflow.ledger import read_ledger
from wormflow.nightly import EXIT_LOCKED, LOCK_NAME, lock_path, run_nightly
from wormflow.report import visible
from wormflow.store import open_complete, read_strings

# The first test of a fixture pays for its runs (the base run trains: minutes on 2 shared cores).
pytestmark = pytest.mark.timeout(2 * RUN_TIMEOUT)
slow = pytest.mark.slow  # every test that runs the workflow

METHODS = ("vae", "gan", "resnet50", "dark_pixels")
CLASSES = ("no_wormed", "wormed")
OLD = ("2026-11-20", "2026-11-21")
NEW = "2026-11-22"
LABELED_COUNTS = {"train": 32, "dev": 12, "test": 10}  # images per class: a real-data subset that trains in seconds
VAE_EPOCHS = 4  # a few epochs, so that a kill after the first one lands mid-training
PER_BATCH_RULES = {"manifest", "decode_shard", "score_shard", "gather", "summarize"}
SHELL_NAMES = ("$(touch pwned).png", ";touch pwned;.png", "`touch pwned`.png", "a&&touch pwned.png")
FAULT_SEED = int(os.environ.get("WORMFLOW_FAULT_SEED") or random.SystemRandom().randrange(2**31))


def batch_file(case: Path, batch: str, name: str = "scores.h5") -> Path:
    return case / "results" / "batches" / batch / name


def method_columns(path: Path) -> dict:
    """``{method: {column: array}}`` plus ``images`` (ids, sha256) and ``quarantine`` of a gathered file."""
    with open_complete(path, "wormflow-batch") as f:
        out = {
            "images": {"ids": read_strings(f["images/ids"]), "sha256": read_strings(f["images/sha256"])},
            "quarantine": dict(zip(read_strings(f["quarantine/ids"]), read_strings(f["quarantine/reasons"]))),
            "attrs": dict(f.attrs),
        }
        for m in METHODS:
            g = f[m]
            out[m] = {k: g[k][()] for k in g if k not in ("ids", "paths")}
            out[m]["ids"] = read_strings(g["ids"])
    return out


def assert_same_scores(new: dict, ref: dict, what: str) -> None:
    assert new["images"] == ref["images"], what
    for m in METHODS:
        assert new[m]["ids"] == ref[m]["ids"], (what, m)
        assert sorted(new[m]) == sorted(ref[m]), (what, m)
        for col in new[m]:
            if col != "ids":
                assert np.array_equal(new[m][col], ref[m][col]), f"{what}: {m}/{col} differs from the uninterrupted run"


def png_bytes(seed: int, h: int = 16, w: int = 20) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(noisy_rgb(h, w, seed=seed)).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- the base run


@pytest.fixture(scope="module")
def base(tmp_path_factory, bbbc010) -> SimpleNamespace:
    """Train (tiny) on a real labeled subset and score two real batches, once per module."""
    root = tmp_path_factory.mktemp("nightly")
    labeled = root / "labeled"
    for split, n in LABELED_COUNTS.items():
        for cls in CLASSES:
            dst = labeled / split / cls
            dst.mkdir(parents=True)
            for f in sorted((bbbc010 / "labeled" / split / cls).iterdir())[:n]:
                shutil.copy2(f, dst / f.name)
    case = root / "base"
    (case / "batches").mkdir(parents=True)
    for b in OLD:
        shutil.copytree(bbbc010 / "batches" / b, case / "batches" / b)
    write_overlay(case, labeled, {"methods": {"vae": {"epochs": VAE_EPOCHS}}})
    t0 = time.monotonic()
    pin_code()
    snakemake(case)
    return SimpleNamespace(root=root, case=case, labeled=labeled, data=bbbc010, seconds=time.monotonic() - t0)


# --------------------------------------------------------------------------- 1. new, quiet, changed, touched


@pytest.fixture(scope="module")
def grown(base) -> SimpleNamespace:
    """A copy of the base results; batch 2026-11-22 arrives: a dry run, then the nightly run."""
    case = copy_case(base.case, base.root / "grown")
    settle(case)
    results = case / "results"
    kept = sorted(
        # the old batches' seals are rewritten: copying the case changed their directories' ctimes
        [p for b in OLD for p in (results / "batches" / b).rglob("*") if p.is_file() and p.name != "seal.json"]
        + list((results / "models").rglob("model.pt"))
        + [results / "labeled" / "test" / "scores.h5", results / "eval" / "metrics.json"]
    )
    before = snapshot(kept)
    shutil.copytree(base.data / "batches" / NEW, case / "batches" / NEW)
    dry = snakemake(case, extra=("-n",))
    night = nightly(case)
    return SimpleNamespace(case=case, kept=kept, before=before, after=snapshot(kept), dry=jobs_in(dry.stdout), night=night)


@slow
def test_new_batch_dry_run_lists_only_its_jobs(grown):
    jobs = grown.dry
    rules = rules_of(jobs)
    # Before its manifest (a checkpoint) exists, the new batch shows as manifest + gather; decode and score follow it.
    assert rules.get("manifest") == 1 and rules.get("gather") == 1, jobs
    assert set(rules) <= PER_BATCH_RULES | {"ledger", "report", "all"}, jobs
    assert {"ledger", "report", "all"} <= set(rules), jobs
    for rule, out in jobs:
        if rule in PER_BATCH_RULES:
            assert out.startswith(f"results/batches/{NEW}/"), (rule, out)
        assert not any(b in out for b in OLD) and "labeled/" not in out and "models/" not in out, (rule, out)


@slow
def test_new_batch_night_scores_it_and_leaves_old_results_byte_identical(grown):
    case = grown.case
    ran = jobs_in(grown.night.stdout)
    rules = rules_of(ran)
    assert "train" not in rules and "evaluate" not in rules, ran
    assert rules.get("decode_shard") == 1 and rules.get("score_shard") == 1 and rules.get("gather") == 1, ran
    assert rules.get("summarize") == 1, ran
    for rule, out in ran:
        if rule in PER_BATCH_RULES:
            assert out.startswith(f"results/batches/{NEW}/"), (rule, out)
    assert grown.after == grown.before, "a file of an old batch, a model or the evaluation was rewritten"
    new = method_columns(batch_file(case, NEW))
    n_found = len(entries_below(case / "batches" / NEW))
    assert len(new["images"]["ids"]) + len(new["quarantine"]) == n_found
    assert all(len(new[m]["score"]) == len(new["images"]["ids"]) for m in METHODS)
    assert [r["batch"] for r in read_ledger(case / "results" / "batches.tsv")] == [*OLD, NEW]
    report = json.loads((case / "results" / "report.json").read_text())
    assert [b["batch"] for b in report["batches"]] == [*OLD, NEW]


@slow
def test_quiet_night_then_changed_and_touched_batches(grown):
    case = grown.case
    results = case / "results"
    everything = sorted(p for p in results.rglob("*") if p.is_file() and "logs" not in p.parts and p.name != LOCK_NAME)
    before = snapshot(p for p in everything if p.name not in ("report.html", "report.json"))

    quiet = nightly(case)
    assert set(rules_of(jobs_in(quiet.stdout))) <= {"report", "all"}, jobs_in(quiet.stdout)
    assert snapshot(p for p in everything if p.name not in ("report.html", "report.json")) == before

    changed, touched = OLD
    old_changed = method_columns(batch_file(case, changed))
    touched_files = [batch_file(case, touched), batch_file(case, touched, "shards/0.images.h5"), batch_file(case, NEW)]
    touched_before = snapshot(touched_files)
    # Same name, other bytes, the mtime forged back: only the ctime (and the content) tells.
    victim = sorted((case / "batches" / changed).iterdir())[0]
    donor = sorted((case / "batches" / NEW).iterdir())[0]
    assert victim.read_bytes() != donor.read_bytes()
    st = victim.stat()
    victim.write_bytes(donor.read_bytes())
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert victim.stat().st_mtime_ns == st.st_mtime_ns
    for p in (case / "batches" / touched).iterdir():  # touch: new mtimes, same bytes
        os.utime(p)

    # Sealed batches (wormflow/seal.py): changes in place leave their directories as sealed, so a
    # night does not look at them (the documented limit) ...
    unseen = snakemake(case, extra=("-n",))
    assert not {r for r, _ in jobs_in(unseen.stdout)} & PER_BATCH_RULES, jobs_in(unseen.stdout)
    # ... and a re-check does
    night = nightly(case, recheck=True)
    ran = jobs_in(night.stdout)
    rules = rules_of(ran)
    assert "train" not in rules and "evaluate" not in rules, ran
    per_batch = {(r, o.split("/")[2]) for r, o in ran if r in PER_BATCH_RULES}
    assert per_batch == {
        ("manifest", changed),
        ("decode_shard", changed),
        ("score_shard", changed),
        ("gather", changed),
        ("summarize", changed),
        ("manifest", touched),  # re-hashed, nothing else
    }, ran
    assert snapshot(touched_files) == touched_before, "a touched batch was rescored"

    new_changed = method_columns(batch_file(case, changed))
    ids = new_changed["images"]["ids"]
    assert ids == old_changed["images"]["ids"]
    i = ids.index(victim.name)
    assert new_changed["images"]["sha256"][i] == sha256(victim) != old_changed["images"]["sha256"][i]
    others = np.arange(len(ids)) != i
    for m in METHODS:
        for col in ("score", "pred", "features"):
            assert np.array_equal(new_changed[m][col][others], old_changed[m][col][others]), (m, col)
        assert not np.array_equal(new_changed[m]["features"][i], old_changed[m]["features"][i]), m


# --------------------------------------------------------------------------- 2. (and 4, 5) bad input


@pytest.fixture(scope="module")
def odd_night(base) -> SimpleNamespace:
    """Three awkward batches, processed by one nightly run; a second nightly run is started during it."""
    case = copy_case(base.case, base.root / "odd")
    batches = case / "batches"
    odd = batches / "odd-files"
    expect = make_odd_and_bad_files(odd)
    valid = set(expect["valid"])
    bad = dict(expect["bad"])  # name -> substring of the quarantine reason
    (odd / "sub" / "deeper").mkdir(parents=True)
    (odd / "sub" / "deeper" / "nested.png").write_bytes(png_bytes(40))
    valid.add("sub/deeper/nested.png")
    for k, name in enumerate(SHELL_NAMES):
        (odd / name).write_bytes(png_bytes(50 + k))
        valid.add(name)
    (odd / ".hidden.png").write_bytes(png_bytes(41))
    bad[".hidden.png"] = "hidden file"
    (odd / ".thumbs").mkdir()
    (odd / ".thumbs" / "t.png").write_bytes(png_bytes(42))
    bad[".thumbs/t.png"] = "hidden file"
    os.symlink("rgb8.png", odd / "link.png")
    bad["link.png"] = "symbolic link"
    os.symlink("/etc/passwd", odd / "sub" / "outside.png")
    bad["sub/outside.png"] = "symbolic link"
    (odd / "zero.png").write_bytes(b"")
    bad["zero.png"] = "empty file"
    os.mkfifo(odd / "pipe.png")
    bad["pipe.png"] = "not a regular file"
    latin1 = os.fsdecode(b"latin1-\xe9t\xe9.png")
    (odd / latin1).write_bytes(png_bytes(43))
    bad[stored_name(latin1)] = "not valid UTF-8"

    (batches / "empty-night").mkdir()
    only = batches / "only-bad"
    only.mkdir()
    (only / NAME_HTML).write_text("not an image, but a name that is HTML\n")
    (only / "half.png").write_bytes(png_bytes(44, 64, 64)[:300])
    (only / "nothing.tif").write_bytes(b"")
    (only / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    only_bad = {
        NAME_HTML: "not an image",
        "half.png": "corrupt or truncated",
        "nothing.tif": "empty file",
        ".DS_Store": "hidden file",
    }

    # things in the batches root that are not batches: each must be listed, none may crash the night
    os.mkdir(os.fsencode(batches) + b"/night-\xff")  # a directory name that is not UTF-8
    (batches / "loose.png").write_bytes(png_bytes(45))
    os.symlink(odd, batches / "linked-night")

    lock = case / "results" / LOCK_NAME
    first = popen(nightly_cmd(case), case, base.root / "odd-night.log")
    try:
        wait_for(lambda: lock.is_file() and f"pid {first.pid} " in lock.read_text(), 120, "the first run's lock", first)
        t0 = time.monotonic()
        second = subprocess.run(nightly_cmd(case), cwd=case, capture_output=True, text=True, timeout=120)
        second_s = time.monotonic() - t0
        first_rc = first.wait(timeout=RUN_TIMEOUT)
    finally:
        if first.poll() is None:
            kill_tree(first)
    return SimpleNamespace(
        case=case,
        valid=valid,
        bad=bad,
        only_bad=only_bad,
        rc=first_rc,
        output=(base.root / "odd-night.log").read_text(),
        second=second,
        second_s=second_s,
        first_pid=first.pid,
    )


@slow
def test_bad_input_every_file_scored_or_quarantined(odd_night):
    case = odd_night.case
    assert odd_night.rc == 0, odd_night.output[-6000:]
    for batch, bad in (("odd-files", odd_night.bad), ("only-bad", odd_night.only_bad), ("empty-night", {})):
        found = [stored_name(p) for p in entries_below(case / "batches" / batch)]
        cols = method_columns(batch_file(case, batch))
        scored, quarantined = cols["images"]["ids"], cols["quarantine"]
        assert len(scored) + len(quarantined) == len(found), batch
        assert sorted(scored + list(quarantined)) == sorted(found), batch
        assert cols["attrs"]["n_scored"] + cols["attrs"]["n_quarantined"] == cols["attrs"]["n_files"] == len(found)
        for name, reason in bad.items():
            assert name in quarantined, (batch, name)
            assert reason in quarantined[name], (batch, name, quarantined[name])
        if batch == "odd-files":
            assert sorted(scored) == sorted(odd_night.valid)
            for m in METHODS:
                assert sorted(cols[m]["ids"]) == sorted(odd_night.valid), m
                assert np.isfinite(cols[m]["score"]).all(), m
        else:
            assert scored == []
    ledger = {r["batch"]: r for r in read_ledger(case / "results" / "batches.tsv")}
    assert ledger["empty-night"]["status"] == "empty" and ledger["empty-night"]["n_files"] == "0"
    assert ledger["only-bad"]["status"] == "nothing scorable"
    assert ledger["only-bad"]["n_quarantined"] == str(len(odd_night.only_bad))
    assert ledger["odd-files"]["status"] == "ok"


@slow
def test_everything_in_the_batches_root_is_accounted_for(odd_night):
    ledger = json.loads((odd_night.case / "results" / "ledger.json").read_text())
    rejected = {r["batch"]: r["status"] for r in ledger["not_processed"] if r["kind"] == "rejected"}
    assert rejected == {
        "linked-night": "rejected: symbolic link, not followed",
        "loose.png": "rejected: a file, not a batch directory",
        "night-\\xff": "rejected: name is not valid UTF-8",
    }, rejected
    rows = {r["batch"]: r["status"] for r in read_ledger(odd_night.case / "results" / "batches.tsv")}
    assert rows["night-\\xff"] == "rejected: name is not valid UTF-8"
    html = (odd_night.case / "results" / "report.html").read_text()
    assert "night-\\xff" in html and "3 rejected" in html


@slow
def test_bad_input_in_report_escaped(odd_night):
    results = odd_night.case / "results"
    html = (results / "report.html").read_text()
    report = json.loads((results / "report.json").read_text())
    rows = {b["batch"]: b for b in report["batches"]}
    assert {"odd-files", "empty-night", "only-bad", *OLD} <= set(rows)
    assert rows["empty-night"]["n_files"] == 0 and rows["only-bad"]["n_scored"] == 0
    listed = {(q["collection"], q["id"]): q["reason"] for q in report["quarantine"]}
    for batch, bad in (("odd-files", odd_night.bad), ("only-bad", odd_night.only_bad)):
        assert f">{escape(batch)}<" in html
        for name, reason in bad.items():
            assert reason in listed[(batch, name)], (batch, name)
            assert str(escape(visible(name))) in html, name
            assert str(escape(visible(listed[(batch, name)]))) in html, name
    assert "x&lt;img src=x onerror=alert(1)&gt;.png" in html
    assert "<img src=x" not in html and "onerror=alert(1)>" not in html


# --------------------------------------------------------------------------- 3. faults


@slow
def test_killed_scoring_job_is_redone_by_the_next_night(base, grown):
    """Tonight's new batch: its scoring job is SIGKILLed; the next night scores it, exactly as an
    uninterrupted night did (the ``grown`` case, same models and images)."""
    rng = random.Random(FAULT_SEED)
    case = copy_case(base.case, base.root / "kill-score")
    settle(case)
    batch = NEW
    shutil.copytree(base.data / "batches" / NEW, case / "batches" / NEW)
    logs = case / "results" / "logs" / "score_shard" / "batches" / batch

    run = popen(snakemake_cmd(case), case, base.root / "kill-score.log")
    try:

        def running_job():
            for log in sorted(logs.glob("*.log")) if logs.is_dir() else []:
                pid = process_holding(run.pid, log)
                if pid:
                    return pid, log
            return None

        job, log = wait_for(running_job, RUN_TIMEOUT, "a scoring job", run)
        delay = rng.uniform(0.0, 2.0)
        time.sleep(delay)
        try:
            os.kill(job, signal.SIGKILL)
        except ProcessLookupError:
            pytest.fail(f"the scoring job ended before the kill ({delay:.2f} s; WORMFLOW_FAULT_SEED={FAULT_SEED})")
        rc = run.wait(timeout=RUN_TIMEOUT)
    finally:
        if run.poll() is None:
            kill_tree(run)
    assert rc != 0, "Snakemake did not notice the killed job"
    index = case / "results" / "batches" / batch / "shards" / "0.scores.json"
    assert not index.exists()
    for part in (case / "results" / "batches" / batch / "shards" / "0.parts").glob("*.h5"):
        open_complete(part, "wormflow-scores").close()  # atomic writes: a part under its name is complete
    assert not batch_file(case, batch).exists()

    night = nightly(case)
    assert ("score_shard", f"results/batches/{batch}/shards/0.scores.json") in jobs_in(night.stdout)
    assert_same_scores(
        method_columns(batch_file(case, batch)),
        method_columns(batch_file(grown.case, batch)),
        f"{batch} after killing its scoring job {delay:.2f} s in (WORMFLOW_FAULT_SEED={FAULT_SEED})",
    )


@slow
def test_killed_training_and_head_resume_in_the_next_night(base):
    rng = random.Random(FAULT_SEED + 1)
    case = copy_case(base.case, base.root / "kill-train")
    mdir = case / "results" / "models" / "vae" / "seed0"
    for name in ("model.pt", "history.csv"):
        (mdir / name).unlink()
    shutil.rmtree(mdir / "tensorboard")
    log = case / "results" / "logs" / "train" / "vae" / "seed0.log"
    log.unlink()
    target = "results/models/vae/seed0/model.pt"
    first_epoch = re.compile(r"vae epoch 1/\d+ \{.*'seconds': ([0-9.]+)")

    night = popen(nightly_cmd(case, target), case, base.root / "kill-train.log")
    try:
        m = wait_for(lambda: log.is_file() and first_epoch.search(log.read_text()), RUN_TIMEOUT, "the first epoch", night)
        # the epoch is logged before its checkpoint is written (atomically, ~0.5 s for the VAE): a
        # kill in between leaves nothing to resume from, which is right but not what this test is for
        wait_for(lambda: (mdir / "resume.pt").is_file(), RUN_TIMEOUT, "the first checkpoint", night)
        delay = rng.uniform(0.0, 1.0) * float(m.group(1))
        time.sleep(delay)
    finally:
        kill_tree(night)  # the nightly process, Snakemake's head and the job, at once
    seed_note = f"(killed {delay:.2f} s after epoch 1; WORMFLOW_FAULT_SEED={FAULT_SEED})"
    assert not (mdir / "model.pt").exists(), f"the kill came after training had finished {seed_note}"
    assert (mdir / "resume.pt").is_file(), seed_note
    assert any((case / ".snakemake" / "locks").iterdir()), "the killed head left no directory lock to recover from"
    with open(case / "results" / LOCK_NAME) as fh:  # the kernel releases the killed run's lock (once its processes are gone)

        def lockable():
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(fh, fcntl.LOCK_UN)
            return True

        wait_for(lockable, 30, "the killed run's nightly lock to be released")

    again = nightly(case, target)
    assert "Directory cannot be locked" not in again.stdout
    assert re.search(r"vae: resuming after epoch [1-9]", log.read_text()), log.read_text()[-3000:]
    assert not (mdir / "resume.pt").exists()
    ref = Artifact.load(base.case / target)
    new = Artifact.load(case / target)
    assert sorted(new.state_dict) == sorted(ref.state_dict)
    for k, v in ref.state_dict.items():
        assert torch.equal(new.state_dict[k], v), f"{k} differs from the uninterrupted training {seed_note}"
    for k in ("threshold", "dev_scores", "combiner", "epochs_run", "config"):
        assert getattr(new, k) == getattr(ref, k), k


# --------------------------------------------------------------------------- 4. overlapping nights


@slow
def test_second_concurrent_night_exits_75_at_once(odd_night):
    second = odd_night.second
    assert odd_night.rc == 0
    assert second.returncode == EXIT_LOCKED, second.stdout + second.stderr
    assert odd_night.second_s < 10, odd_night.second_s
    assert "another wormflow run holds" in second.stderr and f"pid {odd_night.first_pid} " in second.stderr, second.stderr


# --------------------------------------------------------------------------- 5. trust


class _Exploit:
    """Unpickling this runs a shell command (what a crafted checkpoint does)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@slow
def test_pickle_with_code_in_place_of_a_model_is_refused(base):
    case = copy_case(base.case, base.root / "pickle")
    model = case / "results" / "models" / "vae" / "seed0" / "model.pt"
    marker = case / "PICKLE-CODE-RAN"
    st = model.stat()
    model.unlink()
    fake = {
        "format": "wormflow-model",
        "format_version": 1,
        "method": "vae",
        "payload": _Exploit(f"touch {shlex.quote(str(marker))}"),
    }
    torch.save(fake, model)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    model.chmod(0o444)
    # the file is really dangerous: an unsafe load runs its code
    probe = case / "PROBE"
    torch.save({"payload": _Exploit(f"touch {shlex.quote(str(probe))}")}, case / "probe.pt")
    torch.load(case / "probe.pt", weights_only=False)
    assert probe.exists()

    target = f"results/batches/{OLD[0]}/shards/0.scores.json"
    run = snakemake(case, target, check=False)
    assert run.returncode != 0, run.stdout[-4000:]
    assert not marker.exists(), "the checkpoint's code ran"
    assert not (case / target).exists()
    log = (case / "results" / "logs" / "score_shard" / "batches" / OLD[0] / "0.log").read_text()
    assert "Weights only load failed" in log or "weights_only" in log, log[-3000:]


@slow
def test_missing_data_paths_are_named(base):
    case = base.root / "bad-paths"
    (case / "batches").mkdir(parents=True)
    missing = base.root / "no-such-labeled"
    write_overlay(case, missing)
    run = nightly(case, check=False, timeout=300)
    assert run.returncode not in (0, EXIT_LOCKED)
    assert "data.labeled" in run.stdout and str(missing) in run.stdout, run.stdout[-3000:]

    write_overlay(case, base.labeled, batches="batches-typo")
    run = nightly(case, check=False, timeout=300)
    assert run.returncode not in (0, EXIT_LOCKED)
    assert "data.batches" in run.stdout and "batches-typo" in run.stdout, run.stdout[-3000:]


@slow
def test_file_names_never_reach_a_shell(odd_night):
    case = odd_night.case
    assert odd_night.rc == 0
    cols = method_columns(batch_file(case, "odd-files"))
    for name in SHELL_NAMES:
        assert name in cols["images"]["ids"] or name in cols["quarantine"], name
    places = [case, REPO, Path.cwd(), case / "batches" / "odd-files"]
    assert not [p for p in places if (p / "pwned").exists()]
    assert not [p for p in case.rglob("pwned")]


# --------------------------------------------------------------------------- the nightly runner itself (no workflow)

FAKE_SNAKEMAKE = """#!{python}
import os, signal, sys, time
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\\n")
if "--unlock" in sys.argv:
    sys.exit(0)

def stop(signum, frame):
    with open(os.environ["FAKE_LOG"], "a") as fh:
        fh.write(f"signal {{signum}}\\n")
    sys.exit(130)

signal.signal(signal.SIGINT, stop)
open(os.environ["FAKE_LOG"] + ".started", "w").close()
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
"""


@pytest.fixture
def fake_snakemake(tmp_path, monkeypatch) -> SimpleNamespace:
    exe = tmp_path / "fake-snakemake"
    exe.write_text(FAKE_SNAKEMAKE.format(python=sys.executable))
    exe.chmod(0o755)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    return SimpleNamespace(exe=exe, log=log, started=Path(f"{log}.started"))


def test_lock_lies_in_snakemakes_working_directory(tmp_path):
    wd = tmp_path / "run"
    assert lock_path(["-s", "Snakefile", "--directory", str(wd)]) == wd / "results" / LOCK_NAME
    assert lock_path(["-d", str(wd)], "out") == wd / "out" / LOCK_NAME
    assert lock_path([f"--directory={wd}"]) == wd / "results" / LOCK_NAME
    assert lock_path(["--directory", str(wd)], str(tmp_path / "abs")) == tmp_path / "abs" / LOCK_NAME
    assert lock_path(["--cores", "2"]) == Path("results") / LOCK_NAME


def test_nightly_runs_with_recovery_flags_and_unlocks_only_stale_locks(tmp_path, fake_snakemake):
    wd = tmp_path / "run"
    rc = run_nightly(["--", "--directory", str(wd), "--cores", "2"], snakemake=str(fake_snakemake.exe))
    assert rc == 0
    calls = fake_snakemake.log.read_text().splitlines()
    assert calls == [  # no Snakemake lock to clear
        f"--directory {wd} --cores 2 --rerun-incomplete --keep-going --until manifest",  # the manifests first
        f"--directory {wd} --cores 2 --rerun-incomplete --keep-going",
    ]
    with open(wd / "results" / LOCK_NAME) as fh:  # released when the night ends
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert f"pid {os.getpid()} " in fh.read()
    # a Snakemake lock left by a killed head: stale (we hold the results lock), so it is cleared first
    (wd / ".snakemake" / "locks").mkdir(parents=True)
    (wd / ".snakemake" / "locks" / "0.input.lock").write_text("")
    fake_snakemake.log.unlink()
    assert run_nightly(["--", "--directory", str(wd), "--cores", "2"], snakemake=str(fake_snakemake.exe)) == 0
    assert fake_snakemake.log.read_text().splitlines()[0] == f"--directory {wd} --cores 2 --unlock"


def test_nightly_forwards_sigterm_as_sigint(tmp_path, fake_snakemake, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "60")
    code = f"import sys; from wormflow.nightly import run_nightly; sys.exit(run_nightly(sys.argv[1:], snakemake={str(fake_snakemake.exe)!r}))"
    t0 = time.monotonic()
    night = subprocess.Popen([sys.executable, "-c", code, "--directory", str(tmp_path / "run")])
    try:
        wait_for(fake_snakemake.started.exists, 60, "the fake Snakemake run", night)
        night.send_signal(signal.SIGTERM)
        rc = night.wait(timeout=30)
    finally:
        if night.poll() is None:
            night.kill()
    assert rc == 130 and time.monotonic() - t0 < 30
    assert fake_snakemake.log.read_text().splitlines()[-1] == f"signal {int(signal.SIGINT)}"


# --------------------------------------------------------------------------- 6. one writer per results tree


def _lock_holder(case: Path) -> str:
    path = case / "results" / LOCK_NAME
    return path.read_text() if path.is_file() else ""


@slow
def test_a_night_refuses_while_a_manual_run_writes_and_the_other_way_round(base):
    """A plain ``snakemake`` run takes the results lock too: a night started during it exits 75 at
    once naming it, without clearing its Snakemake lock (on main the night ran ``--unlock`` and
    became a twin); a manual run started during a night stops at once naming the night."""
    case = copy_case(base.case, base.root / "twins")
    settle(case)
    shutil.copytree(base.data / "batches" / NEW, case / "batches" / NEW)
    manual = popen(snakemake_cmd(case), case, base.root / "twins-manual.log")
    try:
        wait_for(lambda: f"snakemake: pid {manual.pid} " in _lock_holder(case), 120, "the manual run's lock", manual)
        t0 = time.monotonic()
        night = nightly(case, check=False, timeout=120)
        seconds = time.monotonic() - t0
        assert night.returncode == EXIT_LOCKED, night.stdout[-3000:]
        assert seconds < 15 and "another wormflow run holds" in night.stdout and f"pid {manual.pid} " in night.stdout
        assert "--unlock" not in night.stdout and "stale" not in night.stdout
        assert manual.wait(timeout=RUN_TIMEOUT) == 0, (base.root / "twins-manual.log").read_text()[-4000:]
    finally:
        if manual.poll() is None:
            kill_tree(manual)
    ran = jobs_in((base.root / "twins-manual.log").read_text())
    assert rules_of(ran).get("score_shard") == 1, ran  # the new batch was scored once, by the one run

    # the other way round: a night holds the lock; a manual run stops at once and names it
    os.utime(case / "batches" / NEW / sorted(os.listdir(case / "batches" / NEW))[0])  # something to do
    night = popen(nightly_cmd(case), case, base.root / "twins-night.log")
    try:
        wait_for(lambda: f"wormflow nightly: pid {night.pid} " in _lock_holder(case), 120, "the night's lock", night)
        manual = snakemake(case, check=False, timeout=120)
        assert manual.returncode != 0 and "another wormflow run holds" in manual.stdout, manual.stdout[-3000:]
        assert f"pid {night.pid} " in manual.stdout
        assert night.wait(timeout=RUN_TIMEOUT) == 0
    finally:
        if night.poll() is None:
            kill_tree(night)
    # a dry run is read-only: it never waits for or takes the lock
    assert snakemake(case, extra=("-n",)).returncode == 0


# --------------------------------------------------------------------------- 7. a report every morning


def _break_model(case: Path, method: str) -> tuple[bytes, os.stat_result]:
    """Garbage in place of a model, with its old mtime (nothing tells Snakemake it changed)."""
    model = case / "results" / "models" / method / "seed0" / "model.pt"
    data, st = model.read_bytes(), model.stat()
    model.write_bytes(b"not a torch checkpoint\n")
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    return data, st


@slow
def test_a_failing_job_still_gives_a_morning_report_and_only_it_is_retried(base, grown):
    case = copy_case(base.case, base.root / "failing")
    settle(case)
    shutil.copytree(base.data / "batches" / NEW, case / "batches" / NEW)
    report = case / "results" / "report.html"
    before = report.stat().st_mtime_ns
    data, st = _break_model(case, "gan")
    night = nightly(case, check=False)
    assert night.returncode != 0, night.stdout[-3000:]
    assert report.stat().st_mtime_ns > before, "no report this morning"
    ledger = json.loads((case / "results" / "ledger.json").read_text())
    (failed,) = [r for r in ledger["not_processed"] if r["kind"] == "failed"]
    assert failed["batch"] == NEW and failed["failed_rule"] == "score_shard" and failed["failed_shard"] == 0, failed
    assert failed["log"] == f"results/logs/score_shard/batches/{NEW}/0.log"
    assert "Traceback" in (case / failed["log"]).read_text()
    assert [s["batch"] for s in ledger["batches"]] == list(OLD)  # what completed is shown
    html = report.read_text()
    assert (
        "1 failed" in html and f"failed in rule score_shard, shard 0; log: results/logs/score_shard/batches/{NEW}/0.log" in html
    )
    tsv = {r["batch"]: r for r in read_ledger(case / "results" / "batches.tsv")}
    assert tsv[NEW]["status"] == "failed" and tsv[OLD[0]]["status"] == "ok"

    # the model repaired: the next night redoes that batch's scoring only, and the report is whole again
    model = case / "results" / "models" / "gan" / "seed0" / "model.pt"
    model.write_bytes(data)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = nightly(case)
    per_batch = {(r, o.split("/")[2]) for r, o in jobs_in(again.stdout) if r in PER_BATCH_RULES}
    assert per_batch <= {(r, NEW) for r in PER_BATCH_RULES} and ("score_shard", NEW) in per_batch, per_batch
    assert ("decode_shard", NEW) not in per_batch  # its image store was kept
    ledger = json.loads((case / "results" / "ledger.json").read_text())
    assert [s["batch"] for s in ledger["batches"]] == [*OLD, NEW] and ledger["not_processed"] == []
    assert_same_scores(method_columns(batch_file(case, NEW)), method_columns(batch_file(grown.case, NEW)), "after the retry")


@slow
def test_a_damaged_image_store_is_rebuilt_by_the_next_night(base, grown):
    """A store truncated after it was written (a full disk, a node crash): the night fails on it
    with a clear message, removes it and still renders the report; the next night decodes it again
    (on main the store was trusted forever and no report came again)."""
    case = copy_case(base.case, base.root / "damaged")
    settle(case)
    shutil.copytree(base.data / "batches" / NEW, case / "batches" / NEW)
    store = case / "results" / "batches" / NEW / "shards" / "0.images.h5"
    snakemake(case, str(store.relative_to(case)))
    with open(store, "r+b") as fh:
        fh.truncate(store.stat().st_size // 2)
    night = nightly(case, check=False)
    assert night.returncode != 0
    log = (case / "results" / "logs" / "score_shard" / "batches" / NEW / "0.log").read_text()
    assert "could not be read" in log and "removed" in log and "rebuilds it from its source" in log, log[-3000:]
    assert not store.exists()
    ledger = json.loads((case / "results" / "ledger.json").read_text())
    assert [(r["batch"], r["failed_rule"]) for r in ledger["not_processed"]] == [(NEW, "decode_shard")]

    again = nightly(case)
    assert ("decode_shard", f"results/batches/{NEW}/shards/0.images.h5") in jobs_in(again.stdout)
    assert_same_scores(method_columns(batch_file(case, NEW)), method_columns(batch_file(grown.case, NEW)), "after the rebuild")


# --------------------------------------------------------------------------- 8. files that change, batches still being written


@slow
def test_a_file_changed_after_listing_is_quarantined_not_scored(base, monkeypatch):
    """Hours may pass between the manifest job and a decode job waiting in a SLURM queue: a file
    replaced by a link to a file outside the batch, or rewritten (still being written) in between,
    is quarantined "changed after listing", never decoded from other bytes than were listed."""
    from wormflow.config import load_config
    from wormflow.pipeline import decode_shard_step

    case = copy_case(base.case, base.root / "changed-after-listing")
    monkeypatch.chdir(case)  # the manifest names the batch relative to the working directory, as in a run
    batch = case / "batches" / NEW
    shutil.copytree(base.data / "batches" / NEW, batch)
    snakemake(case, f"results/batches/{NEW}/manifest.json")  # listed and hashed ...
    names = sorted(os.listdir(batch))
    outside = base.root / "outside.png"
    shutil.copy2(batch / names[1], outside)
    (batch / names[0]).unlink()
    os.symlink(outside, batch / names[0])  # ... then swapped for a link to a file outside the batch
    (batch / names[2]).write_bytes((batch / names[2]).read_bytes()[:-10])  # ... and another cut short
    config = load_config([str(REPO / "tests" / "configs" / "tiny.yaml")])
    out = case / "results" / "batches" / NEW / "shards" / "0.images.h5"
    decode_shard_step(str(case / f"results/batches/{NEW}/manifest.json"), 0, str(out), sizes=[32], limits=config["decode"])
    store = ImageStoreView(out)
    assert names[0] not in store.ids and names[2] not in store.ids
    assert "symbolic link" in store.quarantine[names[0]], store.quarantine
    assert "changed after listing" in store.quarantine[names[2]], store.quarantine
    assert len(store.ids) == len(names) - 2


class ImageStoreView:
    def __init__(self, path: Path):
        from wormflow.store import ImageStore

        s = ImageStore.open(path)
        self.ids, self.quarantine = s.ids, dict(s.quarantine)


def _settle_minutes(case: Path, minutes: float) -> None:
    overlay = yaml.safe_load((case / "overlay.yaml").read_text())
    overlay["data"]["settle_minutes"] = minutes
    (case / "overlay.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))


@slow
def test_a_batch_still_being_written_is_deferred_to_the_next_night(base):
    case = copy_case(base.case, base.root / "settle")
    settle(case)
    shutil.copytree(base.data / "batches" / NEW, case / "batches" / NEW)  # its files changed just now
    _settle_minutes(case, 30)
    night = nightly(case)
    assert not any(NEW in out for _, out in jobs_in(night.stdout)), jobs_in(night.stdout)
    ledger = json.loads((case / "results" / "ledger.json").read_text())
    (row,) = ledger["not_processed"]
    assert row["batch"] == NEW and row["kind"] == "deferred" and "settle time 30 min" in row["status"], row
    assert "1 deferred" in (case / "results" / "report.html").read_text()
    _settle_minutes(case, 0)
    later = nightly(case)  # (as if the next night: the files have settled)
    assert ("gather", f"results/batches/{NEW}/scores.h5") in jobs_in(later.stdout)


# --------------------------------------------------------------------------- 9. retraining waits until asked


@slow
def test_changed_training_data_keep_scoring_and_report_retraining_pending(base):
    """Labeled data change: the night scores every new batch with the current models (on main the
    protected model stopped the whole night for any user but root) and the report says retraining
    is pending and why; `wormflow retrain --methods vae` retrains the VAE only."""
    case = copy_case(base.case, base.root / "pending")
    settle(case)
    labeled = base.root / "labeled-changed"
    shutil.copytree(base.labeled, labeled)
    # one more training image (a test-split file under a new name: the in-repository subset has no spare train files)
    extra = sorted((base.data / "labeled" / "test" / "wormed").iterdir())[-1]
    shutil.copy2(extra, labeled / "train" / "wormed" / f"extra-{extra.name}")
    write_overlay(case, labeled, {"methods": {"vae": {"epochs": VAE_EPOCHS}}})
    shutil.copytree(base.data / "batches" / NEW, case / "batches" / NEW)
    models = {m: case / "results" / "models" / m / "seed0" / "model.pt" for m in METHODS}
    before = {m: sha256(p) for m, p in models.items()}

    night = nightly(case)
    assert "train" not in rules_of(jobs_in(night.stdout))
    assert {m: sha256(p) for m, p in models.items()} == before
    assert batch_file(case, NEW).is_file()
    pending = json.loads((case / "results" / "ledger.json").read_text())["retraining_pending"]
    assert {p["method"] for p in pending} == {"vae", "gan", "resnet50", "dark_pixels"}
    assert all("training data changed" in " ".join(p["reasons"]) for p in pending), pending
    assert "Retraining pending for vae" in (case / "results" / "report.html").read_text()

    retrain = subprocess.run(
        [sys.executable, "-m", "wormflow.cli", "retrain", "--methods", "vae", "--", *snakemake_args(case)],
        cwd=case,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert retrain.returncode == 0, (retrain.stdout + retrain.stderr)[-4000:]
    assert sha256(models["vae"]) != before["vae"]
    assert {m: sha256(models[m]) for m in ("gan", "resnet50", "dark_pixels")} == {
        m: before[m] for m in ("gan", "resnet50", "dark_pixels")
    }
    pending = json.loads((case / "results" / "ledger.json").read_text())["retraining_pending"]
    assert {p["method"] for p in pending} == {"gan", "resnet50", "dark_pixels"}


# --------------------------------------------------------------------------- 10. leftovers of killed jobs


@slow
def test_temporary_files_of_killed_jobs_are_removed_by_the_next_run(base):
    case = copy_case(base.case, base.root / "temps")
    shards = case / "results" / "batches" / OLD[0] / "shards"
    from wormflow.atomic import writer_host

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    stale = shards / f".0.images.h5.{writer_host()}.{dead.pid}.abc12345.tmp"
    stale.write_bytes(b"\0" * 4096)
    live = shards / f".0.images.h5.{writer_host()}.{os.getpid()}.def45678.tmp"  # this test process: alive
    live.write_bytes(b"\0")
    shutil.copytree(base.data / "batches" / NEW, case / "batches" / NEW)  # something to do: hooks run
    nightly(case)
    assert not stale.exists() and live.exists()
