import os
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

# Cluster filesystems often cannot lock; every HDF5 file has exactly one writer.
# Set before h5py is imported anywhere; local and SLURM jobs (--export=ALL) inherit it.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import wormflow.workflow as wfh
from wormflow import paths as P
from wormflow import runlock

# One writer per results tree: every head process that may write takes the lock now, before
# Snakemake builds its DAG or takes its own directory lock, and holds it until it exits (the
# nightly runner hands its lock down). Read-only invocations and the job-level Snakemake inside a
# cluster job do not take it. See wormflow/runlock.py.
if workflow.is_main_process and not runlock.read_only(sys.argv[1:]):
    try:
        RUN_LOCK = runlock.acquire(P.RESULTS, role="snakemake")
    except runlock.LockedError as exc:
        raise WorkflowError(str(exc)) from None

validate(config, schema="../wormflow/config.schema.yaml")
for _method, _schema in wfh.method_schemas(config).items():
    validate(config["methods"][_method], schema=str(_schema))


def _data_root(key):
    value = config["data"][key]
    return f"{P.DEMO}/{key}" if value == "demo" else value


LABELED_ROOT = _data_root("labeled")
BATCHES_ROOT = _data_root("batches")
# A mistyped data path must stop the run with its name, not give an empty night
# (batches) or fail later inside a manifest job (labeled).
for _key, _root in (("labeled", LABELED_ROOT), ("batches", BATCHES_ROOT)):
    if config["data"][_key] != "demo" and not os.path.isdir(_root):
        raise WorkflowError(
            f"config data.{_key}: {_root!r} is not a directory "
            f"(relative paths are taken from the working directory {os.getcwd()!r})"
        )
DEMO_INPUTS = config["data"]["labeled"] == "demo" or config["data"]["batches"] == "demo"
if config["data"]["batches"] == "demo":
    BATCHES, REJECTED_BATCHES, DEFERRED_BATCHES = (
        sorted(config["demo"]["batches"]),
        [],
        [],
    )
else:
    BATCHES, REJECTED_BATCHES = wfh.discover_batches(BATCHES_ROOT)
METHODS = wfh.enabled_methods(config)
SEEDS = [int(s) for s in config["training"]["seeds"]]
PRIMARY_SEED = SEEDS[0]
IMAGE_SIZES = wfh.image_sizes(config)
RUNS = {m: wfh.method_seeds(m, SEEDS) for m in METHODS}  # the models: method -> seeds
RETRAIN = wfh.retrain_methods(config, METHODS)
# The training runs that may be (re)done in this run - models that do not exist yet, and those of
# the methods whose retraining this run allows. Any other model is used as it is (see train.smk).
TRAINABLE = [
    P.run_name(m, s)
    for m, seeds in RUNS.items()
    for s in seeds
    if m in RETRAIN or not os.path.exists(P.model(m, s))
]
# Sealed batches (wormflow/seal.py): complete, unchanged batches scored by today's models and config
# leave the DAG - no listing, no checkpoint, no per-shard job; only their summaries are inputs. None
# is sealed when a recheck is asked for or a model that scores batches may be (re)trained in this run.
RECHECK = (
    str(config.get("recheck", False)).lower() == "true"
)  # --config recheck=true gives a string
SEAL_SCORING = wfh.seal_scoring_config(config, METHODS, PRIMARY_SEED)
SEALED_BATCHES, UNSEALED = wfh.sealed_batches(
    BATCHES_ROOT,
    BATCHES,
    SEAL_SCORING,
    {m: P.model(m, PRIMARY_SEED) for m in METHODS},
    recheck=RECHECK or any(P.run_name(m, PRIMARY_SEED) in TRAINABLE for m in METHODS),
)
OPEN_BATCHES = [b for b in BATCHES if b not in set(SEALED_BATCHES)]
DEFERRED_BATCHES = []
if config["data"]["batches"] != "demo":
    OPEN_BATCHES, DEFERRED_BATCHES = wfh.settled_batches(
        BATCHES_ROOT,
        OPEN_BATCHES,
        config["data"]["settle_minutes"],
        {b: P.manifest(P.batch_collection(b)) for b in OPEN_BATCHES},
    )
BATCHES = sorted([*SEALED_BATCHES, *OPEN_BATCHES])
RETENTION = {
    "shard_stores": "keep",
    "slurm_logs_days": None,
    "report_detail_batches": None,
    **config.get("retention", {}),
}


# A batch name that matches only open batches, so that nothing produces the files of a sealed one; they
# are plain inputs (see SEALED_BATCHES).
OPEN_BATCH_NAME = wfh.not_one_of(SEALED_BATCHES) + r"[A-Za-z0-9][A-Za-z0-9._+@=,-]*"


wildcard_constraints:
    coll=f"batches/{OPEN_BATCH_NAME}|labeled/(train|dev|test)",
    batch=OPEN_BATCH_NAME,
    shard=r"\d+",
    run="|".join(map(re.escape, TRAINABLE)) if TRAINABLE else "(?!x)x",  # never matches: nothing to train


localrules:
    all,
    demo_data,
    manifest,
    gather,
    summarize,
    evaluate,
    ledger,
    report,


# ----------------------------------------------------------------- resources (grow with the retry)


def scaled(base):
    """A resource that grows with Snakemake's ``attempt`` (1 on the first try, 2 on the retry)."""

    def resource(wildcards, attempt):
        return base * attempt

    return resource


def gpus_for(device):
    """1 GPU for a job when the configured device is CUDA and one of its methods uses a GPU."""

    def resource(wildcards):
        if not device.startswith("cuda"):
            return 0
        names = [P.run_method(wildcards.run)] if "run" in wildcards.keys() else METHODS
        return int(any(wfh.uses_gpu(m) for m in names))

    return resource


# ----------------------------------------------------------------- collections and models


def collection_dir(coll):
    """The source directory of a collection (``batches/<name>`` or ``labeled/<split>``)."""
    kind, name = coll.split("/", 1)
    return os.path.join(BATCHES_ROOT if kind == "batches" else LABELED_ROOT, name)


def seeds_of(method, coll=None):
    """The seeds whose models score a collection: all of a method's seeds on the test split, else the first."""
    seeds = wfh.method_seeds(method, SEEDS)
    return seeds if coll == P.TEST else seeds[:1]


def checked_manifest(coll):
    """The collection's manifest, once its checkpoint has run (re-evaluates the DAG after it)."""
    return checkpoints.manifest.get(coll=coll).output[0]


def n_shards(coll):
    return wfh.manifest_summary(checked_manifest(coll))["n_shards"]


def shard_stores(coll):
    return [P.store(coll, k) for k in range(n_shards(coll))]


def score_indexes(coll):
    return [P.score_index(coll, k) for k in range(n_shards(coll))]


def primary_models():
    return {m: P.model(m, PRIMARY_SEED) for m in METHODS}


def all_models():
    return {m: {s: P.model(m, s) for s in seeds} for m, seeds in RUNS.items()}


# ----------------------------------------------------------------- input functions and params


def get_demo_root(wildcards, output):
    return os.path.dirname(output.labeled)


def get_manifest_input(wildcards):
    if not DEMO_INPUTS:
        return []
    return [f"{P.DEMO}/labeled", f"{P.DEMO}/batches"]


def get_collection_dir(wildcards):
    return collection_dir(wildcards.coll)


def get_is_labeled(wildcards):
    return wildcards.coll.startswith("labeled/")


def get_stat_fingerprint(wildcards):
    """Cheap change detector (stat calls only); the manifest job then compares contents."""
    root = collection_dir(wildcards.coll)
    if not os.path.isdir(
        root
    ):  # not generated yet (demo) or missing: the manifest job reports it
        return "missing"
    return wfh.collection_state(root, get_is_labeled(wildcards))[0]


def get_shard_digest(wildcards):
    """Content digest of one shard: decode and score re-run only when it changes."""
    digests = wfh.manifest_summary(P.manifest(wildcards.coll))["shard_digests"]
    return digests[int(wildcards.shard)]


def get_decode_limits():
    """The decode settings that decide what a store holds (the thread count decides only how fast)."""
    return {k: v for k, v in config["decode"].items() if k != "threads"}


def get_run_method(wildcards):
    return P.run_method(wildcards.run)


def get_run_seed(wildcards):
    return P.run_seed(wildcards.run)


def get_fields_config(wildcards):
    """How channel files form fields (batches only: the labeled splits are patch folders)."""
    return None if get_is_labeled(wildcards) else config["fields"]


def get_field_pattern(wildcards):
    """The file-name pattern of channel files (None when fields are off): the summary finds the
    wells of quarantined fields by it (a function: the pattern's braces are not wildcards).
    """
    return config["fields"]["pattern"] if config["fields"]["enabled"] else None


def get_tiling_config(wildcards):
    """How large images and fields are cut into tiles (batches only: a labeled image has one label)."""
    return None if get_is_labeled(wildcards) else config["tiling"]


def get_method_config(wildcards):
    return config["methods"][P.run_method(wildcards.run)]


def get_training_stores(wildcards):
    # not ancient(): only runs allowed to (re)train reach this rule (see TRAINABLE), and for those a
    # rebuilt store must count (with ancient inputs being rebuilt, Snakemake 9.27 also ignored the
    # changed params and planned no training at all)
    return {
        "train": shard_stores("labeled/train"),
        "dev": shard_stores("labeled/dev"),
    }


def get_training_data_digest(wildcards):
    """Content of the train and dev splits, independent of the shard size (training reads the
    shards concatenated, in order): what a model records, and what "retraining pending" compares.
    """
    return wfh.json_digest(
        {
            s: wfh.manifest_summary(checked_manifest(f"labeled/{s}"))["data_digest"]
            for s in ("train", "dev")
        }
    )


def get_training_code_digest(wildcards):
    return wfh.training_code_digest(P.run_method(wildcards.run))


def get_score_models(wildcards):
    """Every model that scores this collection: ``{method: {seed: model.pt}}``."""
    return {m: {s: P.model(m, s) for s in seeds_of(m, wildcards.coll)} for m in METHODS}


def get_score_input(wildcards):
    models = get_score_models(wildcards)
    return {
        "store": ancient(P.store(wildcards.coll, wildcards.shard)),
        "models": [p for seeds in models.values() for p in seeds.values()],
    }


def get_gather_input(wildcards):
    coll = wildcards.coll
    # not ancient(stores): a re-decoded shard (its content changed) must re-gather, and so rescore,
    # even though the score indexes are temp() and gone; a rebuilt store makes the same happen
    return {
        "manifest": ancient(checked_manifest(coll)),
        "stores": shard_stores(coll),
        "indexes": score_indexes(coll),
    }


def get_collection_digest(wildcards):
    return wfh.manifest_summary(checked_manifest(wildcards.coll))["shard_digests"]


def get_evaluate_input(wildcards):
    return {
        "test": P.scores(P.TEST),
        "test_stores": shard_stores(P.TEST),
        "models": [P.model(m, s) for m in METHODS for s in seeds_of(m, P.TEST)],
    }


def get_evaluate_models(wildcards):
    return {m: {s: P.model(m, s) for s in seeds_of(m, P.TEST)} for m in METHODS}


def get_summarize_input(wildcards):
    coll = P.batch_collection(wildcards.batch)
    # no checkpoint lookup here: the models show in a dry run before any manifest exists
    return {
        "scores": P.scores(coll),
        "manifest": ancient(P.manifest(coll)),
        "models": list(primary_models().values()),
    }


def get_ledger_input(wildcards):
    return {
        "summaries": [P.summary(b) for b in BATCHES],
        "test_manifest": ancient(P.manifest(P.TEST)),
        # for "retraining pending": the models' sidecars and what they would be trained on now
        "sidecars": ancient(
            [P.model_sidecar(m, s) for m, seeds in RUNS.items() for s in seeds]
        ),
        "labeled": ancient([P.manifest(f"labeled/{s}") for s in ("train", "dev")]),
    }


def get_seal_params():
    """How the ledger appends and seals (wormflow/seal.py); stable while the config is, so sealing a
    batch does not make the next night's ledger run again."""
    return {
        "root": BATCHES_ROOT,
        "scoring": SEAL_SCORING,
        "models": {m: P.model(m, PRIMARY_SEED) for m in METHODS},
        "recheck": RECHECK,
        "drop_stores": RETENTION["shard_stores"] == "drop_after_gather",
    }


def get_provisional(wildcards):
    """Non-empty after a failed run rendered the ledger and report itself (wormflow/morning.py): as a
    param it makes Snakemake render them again, although what they depend on looks up to date.
    """
    from wormflow.morning import provisional_token

    return provisional_token()


def get_training_runs(wildcards):
    return RUNS


def training_state():
    """What the ledger compares each model's sidecar with: config sections, code, training data, threshold rule."""
    return {
        "models": all_models(),
        "sections": {m: config["methods"][m] for m in METHODS},
        "code": {m: wfh.training_code_digest(m) for m in METHODS},
        "manifests": {s: P.manifest(f"labeled/{s}") for s in ("train", "dev")},
        "calibration": config.get("calibration", {}),
    }


def get_training_state(wildcards):
    return training_state()


# ----------------------------------------------------------------- hooks


def remove_stale_temps():
    """Temporary files that killed jobs left in the results tree (their writers are gone)."""
    from wormflow.atomic import remove_stale_temps as remove

    if os.path.isdir(P.RESULTS):
        for path in remove(P.RESULTS, recursive=True):
            logger.info(f"removed the temporary file of a killed job: {path}")


def prune_slurm_logs():
    """onsuccess/onerror: delete SLURM job logs older than retention.slurm_logs_days (wormflow/retention.py)."""
    from wormflow.retention import prune_old_files

    days = RETENTION["slurm_logs_days"]
    if days is None:
        return
    try:
        removed = prune_old_files(P.SLURM_LOGS, days)
        if removed:
            logger.info(
                f"removed {len(removed)} SLURM log(s) older than {days} days from {P.SLURM_LOGS}"
            )
    except OSError as exc:  # pruning must never fail a run
        logger.warning(f"SLURM logs not pruned: {exc}")


def report_after_failure():
    """onerror: the ledger and the report from what completed (wormflow/morning.py)."""
    from wormflow.morning import report_after_failure as render

    try:
        render(
            batches=BATCHES,
            rejected=REJECTED_BATCHES,
            deferred=DEFERRED_BATCHES,
            runs=RUNS,
            models=all_models(),
            training=training_state(),
            methods=METHODS,
            config=config,
            sealed=SEALED_BATCHES,
        )
        logger.warning(
            f"the run failed; {P.REPORT_HTML} shows what completed and what failed"
        )
    except Exception as exc:  # the hook must not hide the run's own error
        logger.error(
            f"the report after the failure could not be rendered: {type(exc).__name__}: {exc}"
        )


def get_final_output():
    return [P.REPORT_HTML, P.REPORT_JSON, P.LEDGER_TSV, P.METRICS_JSON]
