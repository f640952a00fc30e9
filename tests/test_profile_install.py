"""``wormflow profile install slurm``: the SLURM profile from one template (wormflow/slurm_profile.py).

No cluster needed: files written, overwrite refusal, bad values rejected, --gpus vs --gres
rendering, and the plugin's own sbatch arguments for both (its set_gres_string), plus a dry run
with `snakemake --profile slurm` found by name in a temporary XDG_CONFIG_HOME.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from wormflow.cli import main
from wormflow.slurm_profile import GPU_RULES, ProfileError, default_dest, render

REPO = Path(__file__).resolve().parents[1]


def _load(text: str) -> dict:
    return yaml.safe_load(text)


def _eval(expr):
    """What Snakemake makes of a profile's resource value (a Python expression; bare words stay strings)."""
    if not isinstance(expr, str):
        return expr
    try:
        return eval(expr, {"__builtins__": {}}, {"attempt": 1})
    except NameError:
        return expr


def test_install_writes_the_profile_where_snakemake_looks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["profile", "install", "slurm", "--partition", "gpu-a", "--account", "lab_42", "--qos", "normal"]) == 0
    target = tmp_path / "xdg/snakemake/slurm/config.yaml"
    out = capsys.readouterr().out
    assert f"wrote {target}" in out and "snakemake --profile slurm" in out
    prof = _load(target.read_text())
    assert prof["executor"] == "slurm" and prof["slurm-qos"] == "normal"
    assert _eval(prof["default-resources"]["slurm_partition"]) == "gpu-a"
    assert _eval(prof["default-resources"]["slurm_account"]) == "lab_42"
    assert set(prof["set-resources"]) == set(GPU_RULES)
    # the header records the command that wrote it
    assert "wormflow profile install slurm --partition gpu-a --account lab_42 --qos normal" in target.read_text()


def test_default_dest_follows_xdg_then_home(tmp_path):
    assert default_dest(env={"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == Path("/x/snakemake/slurm")
    assert default_dest(env={"HOME": "/h"}) == Path("/h/.config/snakemake/slurm")


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    dest = tmp_path / "prof"
    assert main(["profile", "install", "slurm", "--dest", str(dest), "--partition", "a"]) == 0
    before = (dest / "config.yaml").read_text()
    assert main(["profile", "install", "slurm", "--dest", str(dest), "--partition", "b"]) == 1
    assert "exists; give --force" in capsys.readouterr().err
    assert (dest / "config.yaml").read_text() == before
    assert main(["profile", "install", "slurm", "--dest", str(dest), "--partition", "b", "--force"]) == 0
    assert _eval(_load((dest / "config.yaml").read_text())["default-resources"]["slurm_partition"]) == "b"


@pytest.mark.parametrize(
    "args",
    [
        ["--partition", "debug\nexecutor: local"],
        ["--partition", "a b"],
        ["--account", "x'; rm -rf /"],
        ["--account=-A"],
        ["--qos", "q:1"],
        ["--gpu-model", "a100:2"],
        ["--constraint", "a100\n"],
        ["--cpus-per-gpu", "0"],
        ["--set", "jobs"],
        ["--set", "jobs=1\nexecutor: local"],
        ["--set", "jobs={a: 1}"],
        ["--set", "jobs=[1, 2]"],
        ["--set", "jobs=*anchor"],
        ["--set", "Bad Key=1"],
        ["--set", "jobs.x=1"],
    ],
)
def test_bad_values_are_rejected(tmp_path, args, capsys):
    dest = tmp_path / "prof"
    assert main(["profile", "install", "slurm", "--dest", str(dest), *args]) == 1
    assert "error" in capsys.readouterr().err
    assert not dest.exists()


def test_bad_gpu_request_is_an_argparse_error(tmp_path):
    with pytest.raises(SystemExit):
        main(["profile", "install", "slurm", "--dest", str(tmp_path), "--gpu-request", "both"])
    with pytest.raises(ProfileError):
        render(gpu_request="both")


def test_names_that_are_python_builtins_stay_strings():
    """Snakemake evaluates resource values: a partition named `all` must not become the builtin."""
    prof = _load(render(partition="all", account="max"))
    assert prof["default-resources"] == {"slurm_partition": "'all'", "slurm_account": "'max'"}


def _sbatch_gpu_args(resources: dict) -> str:
    """The plugin's own GPU arguments for a job with these resources (evaluated as Snakemake would)."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Res(dict):
        __getattr__ = dict.__getitem__

    job = SimpleNamespace(resources=Res({k: _eval(v) for k, v in resources.items()}))
    return set_gres_string(job).strip()


@pytest.mark.parametrize(
    ("request_", "model", "resources", "sbatch"),
    [
        ("gpus", None, {"gpu": 1}, "--gpus=1"),
        ("gpus", "a100", {"gpu": 1, "gpu_model": "'a100'"}, "--gpus=a100:1"),
        ("gres", None, {"gpu": 0, "gres": "'gpu:1'"}, "--gres=gpu:1"),
        ("gres", "h100.80gb", {"gpu": 0, "gres": "'gpu:h100.80gb:1'"}, "--gres=gpu:h100.80gb:1"),
    ],
)
def test_gpus_vs_gres_rendering(request_, model, resources, sbatch):
    prof = _load(render(gpu_request=request_, gpu_model=model, gpu_partition="gpu", cpus_per_gpu=8))
    for rule in GPU_RULES:
        res = prof["set-resources"][rule]
        assert res == {**resources, "slurm_partition": "'gpu'", "cpus_per_gpu": 8}, res
        assert _sbatch_gpu_args(resources) == sbatch
    assert "gpu" not in prof.get("default-resources", {}) and "gres" not in prof.get("default-resources", {})


def test_gres_mode_overrides_the_rules_own_gpu():
    """With a CUDA device the rules ask gpu=1 themselves; gres mode sets gpu: 0 so that the
    plugin does not reject gpu + gres (mutually exclusive in 2.x)."""
    from snakemake_executor_plugin_slurm.partitions import parse_gpu_requirements

    res = _load(render(gpu_request="gres"))["set-resources"]["train"]
    job = SimpleNamespace(resources={k: _eval(v) for k, v in res.items()})
    assert parse_gpu_requirements(job) == (1, None)


def test_set_entries_and_arrays():
    prof = _load(render(settings=["jobs=200", "slurm-status-command=squeue", "set-resources.train.mem_mb=32000 * attempt",
                                  "set-threads.score_shard=4"], arrays=True))  # fmt: skip
    assert prof["jobs"] == 200 and prof["slurm-status-command"] == "squeue"
    assert prof["set-resources"]["train"] == {"gpu": 1, "mem_mb": "32000 * attempt"}
    assert prof["set-threads"] == {"score_shard": 4}
    assert prof["slurm-array-jobs"] == "decode_shard,score_shard" and prof["max-jobs-per-timespan"] == "10000/1s"
    assert "slurm-array-jobs" not in _load(render())
    assert _load(render(arrays=True))["jobs"] == "unlimited"  # see HEADER: plugin 2.8.0 hangs otherwise


def test_repository_profile_is_the_rendered_template():
    """profiles/slurm/config.yaml is the template without site fields (one home: slurm_profile.py)."""
    text = (REPO / "profiles/slurm/config.yaml").read_text()
    command = re.search(r"^#   (wormflow profile install .+)$", text, re.M).group(1)
    assert text == render(command=command), "regenerate: wormflow profile install slurm --dest profiles/slurm --force"
    assert not (REPO / "profiles/slurm-site-template").exists()


def test_rules_named_in_the_profile_exist_and_sizes_stay_in_the_rules():
    rules = "".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    for rule in GPU_RULES:
        block = re.search(rf"^rule {rule}:\n(.*?)(?=^rule |\Z)", rules, re.M | re.S)
        assert block and "gpu=gpus_for(" in block.group(1) and "mem_mb=scaled(" in block.group(1), rule
    prof = _load(render(partition="p", account="a", gpu_model="m"))
    assert not any({"mem_mb", "runtime"} & set(r) for r in prof["set-resources"].values())
    assert "config" not in prof


def test_snakemake_finds_the_installed_profile_by_name(tmp_path):
    """`snakemake --profile slurm` from the repository: a dry run lists the GPU rules' requests."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    env.pop("SNAKEMAKE_PROFILE", None)
    smk = Path(sys.executable).parent / "snakemake"
    fixture = REPO / "tests/slurm/fixture"
    for request_, expect in (("gpus", "gpu=1"), ("gres", "gres=gpu:1")):
        subprocess.run([sys.executable, "-m", "wormflow.cli", "profile", "install", "slurm", "--partition", "p",
                        "--gpu-request", request_, "--force"], env=env, check=True, capture_output=True)  # fmt: skip
        proc = subprocess.run([str(smk), "--profile", "slurm", "-n", "-d", str(tmp_path / "wd"), "-s", str(fixture / "Snakefile")],
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout + proc.stderr
        assert "Using profile slurm" in out or str(tmp_path / "xdg/snakemake/slurm") in out, out
        train = re.search(r"^rule train:\n(?:\s+.*\n)*?\s+resources: (.+)$", out, re.M).group(1)
        assert expect in train and "slurm_partition=p" in train and "mem_mb=16000" in train, train
