import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# Cluster filesystems often cannot lock; every HDF5 file has exactly one writer.
# Set before h5py is imported anywhere; local and SLURM jobs (--export=ALL) inherit it.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import wormflow.workflow as wfh

validate(config, schema="../wormflow/config.schema.yaml")


RESULTS = "results"
DEMO_DIR = f"{RESULTS}/demo"
LABELED_SPLITS = wfh.LABELED_SPLITS


def _data_root(key):
    value = config["data"][key]
    return f"{DEMO_DIR}/{key}" if value == "demo" else value


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
    BATCHES, REJECTED_BATCHES = sorted(config["demo"]["batches"]), []
else:
    BATCHES, REJECTED_BATCHES = wfh.discover_batches(BATCHES_ROOT)
METHODS = wfh.enabled_methods(config)
SEEDS = [int(s) for s in config["training"]["seeds"]]
PRIMARY_SEED = SEEDS[0]
IMAGE_SIZES = wfh.image_sizes(config)
CODE_DIGEST = wfh.code_digest()
# GPU-capable rules ask for a GPU when the configured device is CUDA; cluster
# profiles may ask for one regardless (device "auto" then uses it if present).
TRAIN_GPUS = 1 if config["training"]["device"].startswith("cuda") else 0
SCORE_GPUS = 1 if config["scoring"]["device"].startswith("cuda") else 0


wildcard_constraints:
    coll=r"batches/[A-Za-z0-9][A-Za-z0-9._+@=,-]*|labeled/(train|dev|test)",
    shard=r"\d+",
    method="|".join(METHODS) if METHODS else "vae|gan|resnet50",
    seed=r"\d+",


localrules:
    all,
    demo_data,
    manifest,
    gather,
    evaluate,
    ledger,
    report,


# ----------------------------------------------------------------- paths


def collection_dir(coll):
    """The source directory of a collection (``batches/<name>`` or ``labeled/<split>``)."""
    kind, name = coll.split("/", 1)
    return os.path.join(BATCHES_ROOT if kind == "batches" else LABELED_ROOT, name)


def manifest_path(coll):
    return f"{RESULTS}/{coll}/manifest.json"


def store_path(coll, shard):
    return f"{RESULTS}/{coll}/shards/{shard}.images.h5"


def score_shard_path(coll, shard, method, seed):
    return f"{RESULTS}/{coll}/shards/{shard}.{method}.seed{seed}.h5"


def model_path(method, seed=PRIMARY_SEED):
    return f"{RESULTS}/models/{method}/seed{seed}/model.pt"


def batch_scores(batch):
    return f"{RESULTS}/batches/{batch}/scores.h5"


# ----------------------------------------------------------------- checkpoint access


def checked_manifest(coll):
    """The collection's manifest, once its checkpoint has run (re-evaluates the DAG after it)."""
    return checkpoints.manifest.get(coll=coll).output[0]


def n_shards(coll):
    return wfh.manifest_summary(checked_manifest(coll))["n_shards"]


def shard_stores(coll):
    return [store_path(coll, k) for k in range(n_shards(coll))]


# ----------------------------------------------------------------- input functions and params


def get_demo_root(wildcards, output):
    return os.path.dirname(output.labeled)


def get_manifest_input(wildcards):
    if not DEMO_INPUTS:
        return []
    return [f"{DEMO_DIR}/labeled", f"{DEMO_DIR}/batches"]


def get_collection_dir(wildcards):
    return collection_dir(wildcards.coll)


def get_is_labeled(wildcards):
    return wildcards.coll.startswith("labeled/")


def get_stat_fingerprint(wildcards):
    """Cheap change detector (stat calls only); the manifest job then compares contents."""
    from wormflow.inventory import stat_fingerprint

    root = collection_dir(wildcards.coll)
    if not os.path.isdir(
        root
    ):  # not generated yet (demo) or missing: the manifest job reports it
        return "missing"
    return stat_fingerprint(root, labeled=get_is_labeled(wildcards))


def get_shard_digest(wildcards):
    """Content digest of one shard: decode and score re-run only when it changes."""
    digests = wfh.manifest_summary(manifest_path(wildcards.coll))["shard_digests"]
    return digests[int(wildcards.shard)]


def get_training_stores(wildcards):
    return {
        "train": ancient(shard_stores("labeled/train")),
        "dev": ancient(shard_stores("labeled/dev")),
    }


def get_training_data_digest(wildcards):
    """Content of the train and dev splits (a change retrains; a rebuilt store or another
    shard size alone does not: training reads the shards concatenated, in order)."""
    return wfh.section_digest(
        {
            s: wfh.manifest_summary(checked_manifest(f"labeled/{s}"))["data_digest"]
            for s in ("train", "dev")
        }
    )


def get_gather_input(wildcards):
    coll = wildcards.coll
    shards = range(n_shards(coll))
    # not ancient(stores): a re-decoded shard (its content changed) must re-gather, and so rescore,
    # even though the shard scores are temp() and gone; a rebuilt store makes the same happen
    return {
        "manifest": ancient(checked_manifest(coll)),
        "stores": [store_path(coll, k) for k in shards],
        "scores": [
            score_shard_path(coll, k, m, PRIMARY_SEED) for m in METHODS for k in shards
        ],
    }


def get_gather_score_map(wildcards):
    shards = range(n_shards(wildcards.coll))
    return {
        m: [score_shard_path(wildcards.coll, k, m, PRIMARY_SEED) for k in shards]
        for m in METHODS
    }


def get_collection_digest(wildcards):
    return wfh.manifest_summary(checked_manifest(wildcards.coll))["shard_digests"]


def get_evaluate_input(wildcards):
    coll = "labeled/test"
    shards = range(n_shards(coll))
    return {
        "test": f"{RESULTS}/labeled/test/scores.h5",
        "seed_scores": [
            score_shard_path(coll, k, m, s)
            for m in METHODS
            for s in SEEDS
            for k in shards
        ],
        "models": [model_path(m, s) for m in METHODS for s in SEEDS],
        "dev_stores": shard_stores("labeled/dev"),
        "test_stores": shard_stores(coll),
    }


def get_seed_score_map(wildcards):
    shards = range(n_shards("labeled/test"))
    return {
        m: {
            str(s): [score_shard_path("labeled/test", k, m, s) for k in shards]
            for s in SEEDS
        }
        for m in METHODS
    }


def get_model_map(wildcards):
    return {m: {str(s): model_path(m, s) for s in SEEDS} for m in METHODS}


def get_primary_models(wildcards):
    return [model_path(m) for m in METHODS]


def get_report_input(wildcards):
    return {
        "metrics": f"{RESULTS}/eval/metrics.json",
        "ledger": f"{RESULTS}/batches.tsv",
        "test": f"{RESULTS}/labeled/test/scores.h5",
        "test_stores": shard_stores("labeled/test"),
        "batches": [batch_scores(b) for b in BATCHES],
        "models": get_primary_models(wildcards),
    }


def get_final_output():
    return [
        f"{RESULTS}/report.html",
        f"{RESULTS}/report.json",
        f"{RESULTS}/batches.tsv",
        f"{RESULTS}/eval/metrics.json",
    ]
