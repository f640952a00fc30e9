"""Where every file of a results tree lives: one home for the paths the rules, the ledger, the
nightly runner and the report use.

Every function takes the parts of a name (a collection ``batches/<name>`` or
``labeled/<split>``, a shard index, a method, a seed) and returns the path relative to the
working directory; called with Snakemake wildcards (``"{coll}"``) it returns the rule's
pattern, so the rules and the code that reads their outputs cannot drift apart.
"""

from __future__ import annotations

RESULTS = "results"
TEST = "labeled/test"


def batch_collection(batch: str) -> str:
    return f"batches/{batch}"


def labeled_collection(split: str) -> str:
    return f"labeled/{split}"


# ----------------------------------------------------------------------------- per collection


def manifest(coll: str) -> str:
    return f"{RESULTS}/{coll}/manifest.json"


def store(coll: str, shard: int | str) -> str:
    return f"{RESULTS}/{coll}/shards/{shard}.images.h5"


def score_index(coll: str, shard: int | str) -> str:
    """The scoring job's output: which score part holds each (method, seed) of the shard."""
    return f"{RESULTS}/{coll}/shards/{shard}.scores.json"


def score_parts(coll: str, shard: int | str) -> str:
    """The directory of the shard's score parts (content-addressed, reused across runs)."""
    return f"{RESULTS}/{coll}/shards/{shard}.parts"


def scores(coll: str) -> str:
    return f"{RESULTS}/{coll}/scores.h5"


def summary(batch: str) -> str:
    """The ledger's record of one batch (its row, quarantine list and details)."""
    return f"{RESULTS}/batches/{batch}/summary.json"


def thumbnails(batch: str) -> str:
    """The batch's well thumbnails (composite and per-method map overlays, JPEG data URIs), written by
    summarize beside :func:`summary` for batches of fields; the report reads it for its plate views."""
    return summary(batch).rsplit("/", 1)[0] + "/thumbnails.json"


def seal(batch: str) -> str:
    """The batch's seal (see :mod:`wormflow.seal`): what later nights trust without listing the batch."""
    return summary(batch).rsplit("/", 1)[0] + "/seal.json"


# ----------------------------------------------------------------------------- models


def run_name(method: str, seed: int | str) -> str:
    """A training run: ``<method>/seed<k>`` (the train rule's ``{run}`` wildcard)."""
    return f"{method}/seed{seed}"


def run_method(run: str) -> str:
    return run.split("/", 1)[0]


def run_seed(run: str) -> int:
    return int(run.split("/", 1)[1].removeprefix("seed"))


def run_dir(run: str) -> str:
    return f"{RESULTS}/models/{run}"


def model_dir(method: str, seed: int | str) -> str:
    return run_dir(run_name(method, seed))


def model(method: str, seed: int | str) -> str:
    return f"{model_dir(method, seed)}/model.pt"


def model_sidecar(method: str, seed: int | str) -> str:
    """The model's JSON sidecar (everything but the weights; read without torch)."""
    return f"{model_dir(method, seed)}/model.json"


def history(method: str, seed: int | str) -> str:
    return f"{model_dir(method, seed)}/history.csv"


def tensorboard(method: str, seed: int | str) -> str:
    return f"{model_dir(method, seed)}/tensorboard"


# ----------------------------------------------------------------------------- run-level outputs

METRICS_JSON = f"{RESULTS}/eval/metrics.json"
METRICS_CSV = f"{RESULTS}/eval/metrics.csv"
GALLERY = f"{RESULTS}/eval/gallery.h5"
LEDGER_TSV = f"{RESULTS}/batches.tsv"
LEDGER_JSON = f"{RESULTS}/ledger.json"
REPORT_HTML = f"{RESULTS}/report.html"
REPORT_JSON = f"{RESULTS}/report.json"
DEMO = f"{RESULTS}/demo"
# The SLURM executor's job logs (profiles/slurm: slurm-logdir), relative to the working directory;
# config retention.slurm_logs_days prunes them.
SLURM_LOGS = "logs/slurm"


# ----------------------------------------------------------------------------- logs and benchmarks


def log(rule: str, *parts: str | int) -> str:
    """``results/logs/<rule>/<parts...>.log`` (``results/logs/<rule>.log`` without parts)."""
    return f"{RESULTS}/logs/{'/'.join([rule, *map(str, parts)])}.log"


def benchmark(rule: str, *parts: str | int) -> str:
    """``results/benchmarks/<rule>/<parts...>.tsv`` (Snakemake's ``benchmark:`` files)."""
    return f"{RESULTS}/benchmarks/{'/'.join([rule, *map(str, parts)])}.tsv"
