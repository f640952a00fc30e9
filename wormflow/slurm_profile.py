"""``wormflow profile install slurm``: the SLURM cluster profile, rendered from ONE template.

Snakemake finds a profile given by name (``snakemake --profile slurm``) in the working
directory, then in ``$XDG_CONFIG_HOME/snakemake/`` (``~/.config/snakemake/``), then in
``$XDG_CONFIG_DIRS/snakemake/`` (``/etc/xdg/snakemake/``, a site-wide install). This module
renders that profile from the template below with the site's fields (partition, account,
QoS, GPU model, ``--gpus`` vs ``--gres`` requests, ...) and writes it there, so a single
``--profile slurm`` holds every setting and no second profile has to repeat whole blocks.

What the profile holds, and what it does not:

* executor and site settings: executor, retries, status polling, logs, partition, account,
  QoS, constraint, the GPU model and the form of the GPU request;
* the GPU request of the two GPU rules (``train``, ``score_shard``; :data:`GPU_RULES`) in
  ``set-resources``, in the form the site accepts: ``gpu: 1`` (the plugin writes
  ``sbatch --gpus=[<model>:]1``) or ``gres: gpu[:<model>]:1`` (``sbatch --gres=...``; with
  ``gpu: 0``, which the plugin requires: ``gpu`` and a GPU ``gres`` are mutually exclusive);
* NOT memory and run time: they live in the rules (``resources:`` growing with ``attempt``).

``profiles/slurm/config.yaml`` in the repository is this template rendered without site
fields (``wormflow profile install slurm --dest profiles/slurm --force``; a test keeps it in sync).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

GPU_RULES = ("train", "score_shard")  # the rules that run models (rules/train.smk, rules/score.smk)
ARRAY_RULES = ("decode_shard", "score_shard")  # many jobs of one rule per night: SLURM job arrays
GPU_REQUESTS = ("gpus", "gres")

# one SLURM name: partition, account, QoS (SLURM allows more; these are what sites use)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_GPU_MODEL = re.compile(r"^[A-Za-z0-9_.]{1,64}$")  # the plugin's own check of gpu_model
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.&|,:()\[\]*!-]{1,256}$")  # sbatch -C features with & | , [ ] *
_KEY = re.compile(r"^[a-z][a-z0-9-]*(\.[A-Za-z_][A-Za-z0-9_-]*){0,2}$")  # option or option.rule.resource

HEADER = """\
# =============================================================================
# SLURM profile for wormflow -- written by:
#   {command}
# Run from the repository (or any directory with the workflow's Snakefile):
#   snakemake --profile slurm [--configfile mylab.yaml]
# Snakemake finds it by name in ./slurm, $XDG_CONFIG_HOME/snakemake/slurm
# (~/.config/snakemake/slurm), then /etc/xdg/snakemake/slurm (site-wide).
# Change a field by installing again with --force (see `wormflow profile install
# --help`) rather than by hand, or edit this file: it is plain Snakemake.
#
# What is here: executor and site settings only. Memory and run time live in the
# workflow's rules and grow with `attempt` on the retry (decode_shard 4 GB/30 min,
# train 16 GB/4 h, score_shard 8 GB/30 min); lightweight rules run on the login
# node (localrules). set-resources asks for the GPU of the two GPU rules ({gpu_rules})
# in the form this site accepts -- gpu request: {gpu_request}:
#   gpus -> `sbatch --gpus=[<model>:]1`          (resources gpu: 1 [+ gpu_model])
#   gres -> `sbatch --gres=gpu[:<model>]:1`      (resources gres: gpu[:<model>]:1, gpu: 0)
# Resource values are Python expressions evaluated per job, hence names in
# double quotes ("'debug'"). An option given on the command line replaces the
# key here as a whole (a --set-resources would drop the GPU requests below).
# Job arrays ({arrays}): with `--arrays` the plugin submits the ready decode_shard
# and score_shard jobs as one SLURM job array each (sacct: <id>_<task>). Plugin
# 2.8.0 holds back an array's jobs while more jobs of the rule are ready than it
# was handed, and never submits them if `jobs` or max-jobs-per-timespan is what
# held them back (the run hangs): hence jobs: unlimited and no rate limit then.
# =============================================================================
"""

BASE: dict = {
    "executor": "slurm",  # sbatch via snakemake-executor-plugin-slurm
    "jobs": 50,  # at most 50 SLURM jobs queued or running at once
    "local-cores": 2,  # localrules (manifest, gather, ledger, report, ...) in the head process
    "max-jobs-per-timespan": "20/1s",  # gentle on slurmctld
    "latency-wait": 60,  # shared (NFS) filesystems: wait for a finished job's outputs
    "retries": 1,  # resubmit a failed job once; the rules' resources grow with attempt
    "rerun-incomplete": True,
    "keep-going": True,  # other shards and batches still finish after a failure
    "printshellcmds": True,
    "show-failed-logs": True,
    "slurm-logdir": "logs/slurm",  # logs/slurm/rule_<rule>/<wildcards>/<jobid>.log
    "slurm-keep-successful-logs": True,
    "slurm-jobname-prefix": "wormflow",  # job name wormflow_<run uuid>: `sacct --name`
    "slurm-init-seconds-before-status-checks": 40,
    "slurm-status-command": "sacct",  # needs slurmdbd; use squeue where accounting is off
    "slurm-status-attempts": 5,
}


COMMENTS = {  # appended to the top-level lines of the rendered profile
    "executor": "submit jobs with sbatch (snakemake-executor-plugin-slurm)",
    "jobs": "SLURM jobs queued or running at once",
    "local-cores": "cores for the localrules (manifest, gather, ledger, report) in the head process",
    "max-jobs-per-timespan": "submission rate limit, gentle on slurmctld",
    "latency-wait": "seconds to wait for a finished job's outputs on a shared (NFS) filesystem",
    "retries": "resubmit a failed job once; the rules' memory and run time grow with attempt",
    "rerun-incomplete": "re-run jobs whose outputs a killed run left incomplete",
    "keep-going": "a failed job does not stop other shards and batches",
    "printshellcmds": "print each job's shell command",
    "show-failed-logs": "print the rule's log of a failed job",
    "slurm-logdir": "logs/slurm/rule_<rule>/<wildcards>/<jobid>.log (relative to the workdir)",
    "slurm-keep-successful-logs": "keep the SLURM logs of successful jobs too",
    "slurm-jobname-prefix": "job name wormflow_<run uuid>: find a run's jobs with squeue/sacct --name",
    "slurm-init-seconds-before-status-checks": "first status poll; the interval then grows by 10 s per poll without a finished job",
    "slurm-status-command": "needs slurmdbd; where sacct says accounting is disabled use squeue (else the run hangs)",
    "slurm-status-attempts": "tries per poll",
    "slurm-qos": "sbatch --qos for every job",
    "slurm-array-jobs": "these rules' ready jobs go out as one SLURM job array each (see above)",
    "default-resources": "every job: site fields (-p, -A, -C)",
    "set-resources": "the GPU rules' GPU request in this site's form; sizes come from the rules",
}


def _annotate(text: str) -> str:
    lines = []
    for line in text.splitlines():
        key = line.split(":", 1)[0]
        if not line.startswith(" ") and key in COMMENTS:
            line = f"{line:<48} # {COMMENTS[key]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    """Strings that hold quotes (the resource expressions "'debug'") in double quotes."""


def _str(dumper, value):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if "'" in value else None)


_Dumper.add_representer(str, _str)


class ProfileError(ValueError):
    """A site field or --set entry that must not go into a profile."""


def default_dest(name: str = "slurm", env: dict | None = None) -> Path:
    """Where Snakemake looks for ``--profile <name>`` first: $XDG_CONFIG_HOME/snakemake/<name>."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "snakemake" / name


def _check(value: str | None, pattern: re.Pattern, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ProfileError(f"{what} {value!r} is not allowed (expected {pattern.pattern})")
    return value


def _expr(text: str) -> str:
    """A string resource as the Python expression Snakemake evaluates: 'debug' -> "'debug'"."""
    return repr(text)


def _scalar(text: str):
    """A --set value: a YAML scalar (number, true/false, string); no newline, no structure."""
    if any(ch in text for ch in "\n\r\0") or any(ord(ch) < 32 and ch != "\t" for ch in text):
        raise ProfileError(f"--set value {text!r}: control characters are not allowed")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ProfileError(f"--set value {text!r} is not a YAML scalar: {exc}") from None
    if isinstance(value, (dict, list)) or value is None and text.strip() not in ("null", "~"):
        raise ProfileError(f"--set value {text!r}: a single number, true/false or string, not a YAML structure")
    if isinstance(value, str) and text.strip().startswith(("&", "*", "!", "|", ">", "{", "[")):
        raise ProfileError(f"--set value {text!r}: YAML anchors, tags and blocks are not allowed")
    return value


def render(
    *,
    partition: str | None = None,
    gpu_partition: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    gpu_model: str | None = None,
    gpu_request: str = "gpus",
    cpus_per_gpu: int | None = None,
    constraint: str | None = None,
    arrays: bool = False,
    settings: list[str] | tuple[str, ...] = (),
    command: str = "wormflow profile install slurm",
) -> str:
    """The profile's config.yaml text (validated; rendered by yaml.safe_dump, so no field can
    inject YAML)."""
    _check(partition, _NAME, "--partition")
    _check(gpu_partition, _NAME, "--gpu-partition")
    _check(account, _NAME, "--account")
    _check(qos, _NAME, "--qos")
    _check(gpu_model, _GPU_MODEL, "--gpu-model")
    _check(constraint, _CONSTRAINT, "--constraint")
    if gpu_request not in GPU_REQUESTS:
        raise ProfileError(f"--gpu-request {gpu_request!r}: one of {', '.join(GPU_REQUESTS)}")
    if cpus_per_gpu is not None and (not isinstance(cpus_per_gpu, int) or not 1 <= cpus_per_gpu <= 1024):
        raise ProfileError(f"--cpus-per-gpu {cpus_per_gpu!r}: a whole number from 1 to 1024")
    if any(ch in command for ch in "\n\r"):
        raise ProfileError("command: one line")

    profile = dict(BASE)
    if arrays:  # see HEADER: every ready job of an array rule must reach the plugin at once
        profile["jobs"] = "unlimited"
        profile["max-jobs-per-timespan"] = "10000/1s"
        profile["slurm-array-jobs"] = ",".join(ARRAY_RULES)
    if qos:
        profile["slurm-qos"] = qos
    defaults = {}
    if partition:
        defaults["slurm_partition"] = _expr(partition)
    if account:
        defaults["slurm_account"] = _expr(account)
    if constraint:
        defaults["constraint"] = _expr(constraint)
    if defaults:
        profile["default-resources"] = defaults

    gpu: dict = {}
    if gpu_request == "gpus":
        gpu["gpu"] = 1
        if gpu_model:
            gpu["gpu_model"] = _expr(gpu_model)
    else:
        gpu["gpu"] = 0  # the rules' own gpu (1 when the configured device is cuda) must not meet gres
        gpu["gres"] = _expr(f"gpu:{gpu_model}:1" if gpu_model else "gpu:1")
    if gpu_partition:
        gpu["slurm_partition"] = _expr(gpu_partition)
    if cpus_per_gpu:
        gpu["cpus_per_gpu"] = cpus_per_gpu
    profile["set-resources"] = {rule: dict(gpu) for rule in GPU_RULES}

    for item in settings:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ProfileError(
                f"--set {item!r}: expected OPTION=VALUE (a snakemake option without its --, e.g. jobs=100) "
                "or OPTION.RULE.RESOURCE=VALUE (e.g. set-resources.train.mem_mb=32000)"
            )
        parts = key.split(".")
        if len(parts) > 1 and parts[0] not in ("set-resources", "set-threads", "default-resources"):
            raise ProfileError(f"--set {item!r}: dotted keys only below set-resources, set-threads or default-resources")
        node = profile
        for part in parts[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise ProfileError(f"--set {item!r}: {part} is not a mapping")
            node = node[part]
        node[parts[-1]] = _scalar(text)

    header = HEADER.format(
        command=command, gpu_rules=", ".join(GPU_RULES), gpu_request=gpu_request, arrays="on" if arrays else "off"
    )
    return header + "\n" + _annotate(yaml.dump(profile, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000))


def install(text: str, dest: Path | str, *, force: bool = False) -> Path:
    """Write ``dest/config.yaml``; refuse to replace an existing file unless ``force``."""
    dest = Path(dest).expanduser()
    target = dest / "config.yaml"
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; give --force to replace it")
    yaml.safe_load(text)  # never write what Snakemake could not read
    dest.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, target)
    return target
