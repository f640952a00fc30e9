"""The workflow's files, without running it: lint, formatting, pinned environments, config schema, rule directives.

Fast (no training): each test starts at most a few Snakemake or linter
processes, in temporary working directories (never in the repository).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO, TINY, run_snakemake

from wormflow.config import SCHEMA_PATH, ConfigError, load_config

BIN = Path(sys.executable).parent
PY_DIRS = [d for d in ("wormflow", "scripts", "tests", "benchmarks") if (REPO / d).is_dir()]
# Resource names every executor understands (the SLURM plugin maps them to --mem, --time, --gres);
# Snakemake adds _cores (threads), _nodes and tmpdir itself.
STANDARD_RESOURCES = {"gpu", "mem_mb", "runtime"}
IMPLICIT_RESOURCES = {"_cores", "_nodes", "tmpdir"}


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN} (pip install -r requirements.txt)"
    return str(path)


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- lint and format


def test_snakemake_lint_is_clean(tmp_path):
    proc = run_snakemake(tmp_path, "--lint", check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Congratulations" in out, out[-4000:]


def test_snakefmt_check():
    proc = _run([_tool("snakefmt"), "--check", "Snakefile", "rules"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_ruff_check_and_format():
    assert {"wormflow", "scripts", "tests"} <= set(PY_DIRS)
    check = _run([_tool("ruff"), "check", *PY_DIRS])
    assert check.returncode == 0, (check.stdout + check.stderr)[-4000:]
    fmt = _run([_tool("ruff"), "format", "--check", *PY_DIRS])
    assert fmt.returncode == 0, (fmt.stdout + fmt.stderr)[-4000:]


# --------------------------------------------------------------------------- pinned environments


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^=<>!~;\s]+)", line)
        assert m, f"requirements.txt: {line!r} is not pinned with =="
        pins[_normalise(m[1])] = m[2]
    return pins


def _target_python() -> str:
    """The Python the project targets: requires-python's lower bound, which ruff's target-version must agree with."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    m = re.fullmatch(r">=\s*(\d+)\.(\d+)", pyproject["project"]["requires-python"].strip())
    assert m, pyproject["project"]["requires-python"]
    version = f"{m[1]}.{m[2]}"
    assert pyproject["tool"]["ruff"]["target-version"] == f"py{m[1]}{m[2]}"
    return version


ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def test_env_files_exist_for_every_conda_directive():
    assert ENV_FILES, "no envs/*.yaml"
    used = set()
    for smk in (REPO / "rules").glob("*.smk"):
        used |= {Path(p).name for p in re.findall(r'conda:\s*\n\s*"\.\./envs/([^"]+)"', smk.read_text())}
    assert used and used <= {p.name for p in ENV_FILES}, used


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_equal_requirements(env_file):
    pins = _requirements()
    python = _target_python()
    env = yaml.safe_load(env_file.read_text())
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_blocks = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pip_blocks) == 1 and pip_blocks[0], f"{env_file.name}: one pip: list expected"
    assert "pip" in conda_deps
    pythons = [d for d in conda_deps if re.match(r"python\b", d)]
    assert len(pythons) == 1 and re.fullmatch(rf"python\s*=+\s*{re.escape(python)}(\.\*)?", pythons[0]), (
        f"{env_file.name}: {pythons} should pin python={python} (the version the project targets)"
    )
    for dep in conda_deps:
        assert dep == "pip" or dep in pythons, (
            f"{env_file.name}: unexpected conda dependency {dep!r} (pin it like requirements.txt)"
        )
    for entry in pip_blocks[0]:
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^=<>!~;\s]+)", entry.strip())
        assert m, f"{env_file.name}: pip entry {entry!r} is not pinned with =="
        name = _normalise(m[1])
        assert name in pins, f"{env_file.name}: {m[1]} is not in requirements.txt"
        assert m[2] == pins[name], f"{env_file.name}: {m[1]}=={m[2]} but requirements.txt pins {pins[name]}"


# --------------------------------------------------------------------------- the config schema


def test_schema_is_valid_json_schema():
    """Every keyword is a real one: a comma in an unquoted flow-style description must not add a stray key."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                assert value is not None, f"{where}/{key} is null (unquoted comma in a flow mapping?)"
                if key == "description":
                    assert isinstance(value, str), f"{where}/description"
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for k, value in enumerate(node):
                walk(value, f"{where}[{k}]")

    walk(schema, "")


@pytest.mark.parametrize(
    ("overlay", "key"),
    [
        ({"methods": {"vae": {"epochz": 3}}}, "epochz"),
        ({"shard_size": "big"}, "shard_size"),
    ],
    ids=["unknown-key", "wrong-type"],
)
def test_schema_error_names_the_key(tmp_path, overlay, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(overlay))
    proc = run_snakemake(tmp_path / "run", "-n", configfiles=(TINY, bad), check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Error validating config file" in out, out[-3000:]
    assert key in out, out[-3000:]
    assert not (tmp_path / "run" / "results").exists()  # nothing ran

    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config([TINY, bad])


def test_load_config_accepts_the_shipped_configs():
    for overlays in ([], [TINY], [REPO / "config" / "demo.yaml"], [REPO / "config" / "bbbc010.yaml", TINY]):
        assert load_config(overlays)["methods"]["vae"]["enabled"] is True
    for preset in sorted((REPO / "config" / "presets").glob("*.yaml")):
        load_config([preset])


# --------------------------------------------------------------------------- rule directives

# Loads the workflow with Snakemake's API (no DAG, nothing runs) and prints each rule's directives as JSON.
_DUMP_RULES = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.io import is_flagged
from snakemake.settings.types import ConfigSettings, ResourceSettings

snakefile, workdir, *configfiles = sys.argv[1:]
with SnakemakeApi() as api:
    wf = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(configfiles=[Path(c) for c in configfiles]),
        snakefile=Path(snakefile),
        workdir=Path(workdir),
    )
    rules = {
        r.name: {
            "output": [str(f) for f in r.output],
            "protected": [str(f) for f in r.output if is_flagged(f, "protected")],
            "log": [str(f) for f in r.log],
            "benchmark": str(r.benchmark) if r.benchmark else None,
            "resources": sorted(r.resources),
            "is_checkpoint": bool(r.is_checkpoint),
        }
        for r in wf._workflow.rules
    }
print("RULES-JSON:" + json.dumps(rules))
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> dict[str, dict]:
    workdir = tmp_path_factory.mktemp("rules")
    proc = subprocess.run(
        [sys.executable, "-c", _DUMP_RULES, str(REPO / "Snakefile"), str(workdir), str(TINY)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RULES-JSON:")]
    assert proc.returncode == 0 and lines, (proc.stdout + proc.stderr)[-4000:]
    parsed = json.loads(lines[-1].removeprefix("RULES-JSON:"))
    # the API's view agrees with the command line's (so a change in the API cannot make these tests vacuous)
    listed = run_snakemake(workdir, "--list-rules", timeout=300).stdout.split()
    assert set(parsed) == set(listed), (sorted(parsed), listed)
    return parsed


def test_rules_present(rules):
    expected = {
        "all",
        "demo_data",
        "manifest",
        "decode_shard",
        "train",
        "score_shard",
        "gather",
        "summarize",
        "evaluate",
        "ledger",
    }
    assert set(rules) == expected | {"report"}
    assert rules["manifest"]["is_checkpoint"]


def test_every_rule_has_a_log(rules):
    for name, rule in rules.items():
        if not rule["output"]:  # the target rule `all` runs nothing
            assert name == "all"
            continue
        assert rule["log"], f"rule {name} has no log:"
        assert all(p.startswith("results/logs/") for p in rule["log"]), (name, rule["log"])


def test_training_and_scoring_rules_have_benchmarks(rules):
    heavy = ["train", "score_shard", "decode_shard", "gather"]
    for name in heavy:
        assert rules[name]["benchmark"], f"rule {name} has no benchmark:"
        assert rules[name]["benchmark"].startswith("results/benchmarks/")


def test_rules_use_standard_resource_names(rules):
    for name, rule in rules.items():
        extra = set(rule["resources"]) - STANDARD_RESOURCES - IMPLICIT_RESOURCES
        assert not extra, f"rule {name} uses non-standard resources {sorted(extra)} (use gpu, mem_mb, runtime, threads)"
    for name in ("train", "score_shard"):
        assert {"gpu", "mem_mb", "runtime"} <= set(rules[name]["resources"]), name
