"""Command-line entry points: ``wormflow train | score | evaluate | nightly | retrain | profile | demo-data``.

``train``, ``score`` and ``evaluate`` run the workflow's own steps (manifest,
decode once into an image store, train / score / evaluate) on plain
directories, without Snakemake; ``nightly`` runs the Snakemake workflow the
way a cron job or systemd timer should (lock file, stale-lock recovery,
SIGTERM forwarded as SIGINT).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from . import __version__

log = logging.getLogger("wormflow")


def _config(args) -> dict:
    from .config import load_config

    return load_config(args.configfile or [])


def _decode_collection(root: str, work: Path, *, labeled: bool, sizes: list[int], config: dict) -> tuple[str, list[str]]:
    """Manifest + decoded image stores of one directory (the workflow's steps, run in-process); an
    unlabeled directory's channel files are grouped into fields as in a nightly batch."""
    from .pipeline import decode_shard_step, manifest_step

    manifest_path = work / "manifest.json"
    fields = None if labeled else config["fields"]
    manifest = manifest_step(root, str(manifest_path), labeled=labeled, shard_size=config["shard_size"], fields=fields)
    stores = []
    for k in range(manifest.n_shards):
        out = work / f"{k}.images.h5"
        decode_shard_step(
            str(manifest_path),
            k,
            str(out),
            sizes=sizes,
            threads=config["decode"]["threads"],
            limits=config["decode"],
            fields=fields,
            tiling=None if labeled else config["tiling"],
            hdf5=config["hdf5"],
        )
        stores.append(str(out))
    return str(manifest_path), stores


def cmd_train(args) -> int:
    from .data import load_split
    from .train import train

    config = _config(args)
    if args.method not in config["methods"]:
        raise ValueError(f"method {args.method!r} has no section in the configuration (methods: {', '.join(config['methods'])})")
    cfg = dict(config["methods"][args.method])
    for key in ("epochs", "encoder_epochs"):  # --epochs: every epoch count of the method's section
        if args.epochs is not None and key in cfg:
            cfg[key] = args.epochs
    size = cfg["image_size"]
    out = Path(args.out)
    work = out / "stores"
    splits = {}
    for split in ("train", "dev"):
        _, stores = _decode_collection(str(Path(args.labeled) / split), work / split, labeled=True, sizes=[size], config=config)
        splits[split] = load_split(stores, size)
    artifact = train(
        args.method,
        cfg,
        splits["train"],
        splits["dev"],
        out,
        seed=args.seed,
        device=args.device or config["training"]["device"],
        num_workers=config["training"]["num_workers"],
        tensorboard=config["training"]["tensorboard"],
        threshold_rule=config["calibration"]["threshold_rule"],
        n_boot=int(config["calibration"]["n_boot"]),
        field_tile=int(config["tiling"]["tile"]),
    )
    summary = artifact.summary()
    print(json.dumps({k: summary[k] for k in ("method", "threshold", "threshold_rule", "dev_f1", "epochs_run", "weights_init")}))
    return 0


def cmd_score(args) -> int:
    from .artifact import Artifact
    from .pipeline import gather_step, score_shard_step

    config = _config(args)
    artifact = Artifact.load(args.model)
    method, size = artifact.method, int(artifact.config["image_size"])
    with tempfile.TemporaryDirectory(prefix="wormflow-score-") as tmp:
        work = Path(tmp)
        manifest, stores = _decode_collection(args.images, work, labeled=False, sizes=[size], config=config)
        indexes = []
        for k, store in enumerate(stores):
            index = work / f"{k}.scores.json"
            score_shard_step(
                store,
                {method: {artifact.seed: args.model}},
                str(index),
                batch_size=args.batch_size or config["scoring"]["batch_size"],
                device=args.device or config["scoring"]["device"],
                shard_size=config["shard_size"],
                hdf5=config["hdf5"],
                tiling=config["tiling"],
            )
            indexes.append(str(index))
        result = gather_step(
            manifest,
            stores,
            indexes,
            args.out,
            methods=[method],
            shard_size=config["shard_size"],
            hdf5=config["hdf5"],
            batch=Path(args.images).name,
        )
    print(json.dumps({"method": method, **result, "out": args.out}))
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np

    from .artifact import Artifact
    from .data import load_split
    from .evaluate import evaluate_scores
    from .scoring import batches

    config = _config(args)
    artifact = Artifact.load(args.model)
    size = int(artifact.config["image_size"])
    with tempfile.TemporaryDirectory(prefix="wormflow-eval-") as tmp:
        _, stores = _decode_collection(str(Path(args.labeled) / args.split), Path(tmp), labeled=True, sizes=[size], config=config)
        data = load_split(stores, size)
    scorer = artifact.scorer(args.device or config["scoring"]["device"])
    scores = [scorer(b).score for b in batches(data.images, config["scoring"]["batch_size"])]
    scores = np.concatenate(scores) if scores else np.zeros(0)
    block = evaluate_scores(scores, data.labels, artifact.threshold, n_boot=config["evaluation"]["n_boot"])
    block.pop("curves")
    summary = {"method": artifact.method, "split": args.split, "n": int(len(data.labels)), **block}
    text = json.dumps(summary, indent=1)
    if args.out:
        from .atomic import atomic_write_text

        atomic_write_text(args.out, text)
    print(text)
    return 0


def cmd_demo_data(args) -> int:
    from .demo import generate_demo

    print(json.dumps(generate_demo(args.out, seed=args.seed), default=str))
    return 0


def cmd_nightly(args) -> int:
    from .nightly import run_nightly, with_config

    sm_args = [a for a in args.snakemake_args if a != "--"]
    if args.recheck:
        sm_args = with_config(sm_args, "recheck=true")
    return run_nightly(sm_args, results=args.results, snakemake=args.snakemake)


def cmd_retrain(args) -> int:
    from .nightly import retrain

    return retrain(args.methods, args.snakemake_args, force=args.force, results=args.results, snakemake=args.snakemake)


def cmd_profile_install(args) -> int:
    import shlex

    from .slurm_profile import default_dest, install, render

    words = ["wormflow", "profile", "install", args.name]
    for flag in ("partition", "gpu_partition", "account", "qos", "gpu_model", "cpus_per_gpu", "constraint"):
        value = getattr(args, flag)
        if value is not None:
            words += [f"--{flag.replace('_', '-')}", str(value)]
    words += ["--gpu-request", args.gpu_request] + (["--arrays"] if args.arrays else [])
    for item in args.set or []:
        words += ["--set", item]
    text = render(
        partition=args.partition,
        gpu_partition=args.gpu_partition,
        account=args.account,
        qos=args.qos,
        gpu_model=args.gpu_model,
        gpu_request=args.gpu_request,
        cpus_per_gpu=args.cpus_per_gpu,
        constraint=args.constraint,
        arrays=args.arrays,
        settings=args.set or [],
        command=shlex.join(words),
    )
    if args.print:
        sys.stdout.write(text)
        return 0
    dest = Path(args.dest) if args.dest else default_dest(args.name)
    target = install(text, dest, force=args.force)
    print(f"wrote {target}")
    print(f"next: cd <your wormflow checkout> && snakemake --profile {dest if args.dest else args.name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wormflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"wormflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--configfile", nargs="*", help="config overlays merged over config.yaml (as snakemake --configfile)")
        sp.add_argument("--device", help="auto, cpu or cuda (default: from the config)")

    t = sub.add_parser("train", help="train one method on an ImageFolder root (train/ and dev/ splits)")
    t.add_argument("--method", required=True, help="a method of the configuration (vae, gan, resnet50, dark_pixels, ...)")
    t.add_argument("--labeled", required=True, help="root with train/ and dev/, each with no_wormed/ and wormed/")
    t.add_argument("--out", required=True, help="output directory: model.pt, history.csv, tensorboard/")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, help="override the configured epochs (GAN: also the encoder epochs)")
    common(t)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("score", help="score every image below a directory with a trained model.pt")
    s.add_argument("--model", required=True)
    s.add_argument("--images", required=True, help="directory of images (scanned recursively)")
    s.add_argument("--out", required=True, help="output HDF5 (the layout of a batch's scores.h5)")
    s.add_argument("--batch-size", type=int)
    common(s)
    s.set_defaults(func=cmd_score)

    e = sub.add_parser("evaluate", help="metrics of a trained model.pt on a labeled split, at its stored threshold")
    e.add_argument("--model", required=True)
    e.add_argument("--labeled", required=True, help="ImageFolder root")
    e.add_argument("--split", default="test")
    e.add_argument("--out", help="also write the JSON here")
    common(e)
    e.set_defaults(func=cmd_evaluate)

    n = sub.add_parser("nightly", help="run the workflow for tonight's batches (lock, recovery; see README)")
    n.add_argument("--results", default="results", help="results directory holding the lock file")
    n.add_argument("--snakemake", default=None, help="snakemake executable (default: the one beside this Python)")
    n.add_argument(
        "--recheck", action="store_true", help="list, hash and check every batch, sealed or not (--config recheck=true)"
    )
    n.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="arguments for snakemake, after --")
    n.set_defaults(func=cmd_nightly)

    r = sub.add_parser(
        "retrain",
        help="retrain methods whose training data, config or code changed (a night otherwise keeps the models it has)",
    )
    r.add_argument("--methods", nargs="+", required=True, help="methods to retrain, or all")
    r.add_argument("--force", action="store_true", help="retrain even when nothing changed (a new seed of luck)")
    r.add_argument("--results", default="results", help="results directory holding the lock file")
    r.add_argument("--snakemake", default=None, help="snakemake executable (default: the one beside this Python)")
    r.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="arguments for snakemake, after --")
    r.set_defaults(func=cmd_retrain)

    pr = sub.add_parser("profile", help="install the SLURM cluster profile (then: snakemake --profile slurm)")
    prs = pr.add_subparsers(dest="profile_command", required=True)
    pi = prs.add_parser(
        "install",
        help="write $XDG_CONFIG_HOME/snakemake/slurm/config.yaml (~/.config/...) from wormflow's template",
        description="Write the SLURM profile that `snakemake --profile slurm` finds by name: executor and site settings "
        "only (memory and run time are in the rules). Site-wide: --dest /etc/xdg/snakemake/slurm (as root).",
    )
    pi.add_argument("name", choices=["slurm"], help="the profile (its directory name)")
    pi.add_argument("--partition", help="partition for every job (default: the cluster's default partition)")
    pi.add_argument("--gpu-partition", help="partition for the GPU rules (train, score_shard) if GPUs live in their own")
    pi.add_argument("--account", help="account to charge (default: your default account)")
    pi.add_argument("--qos", help="--qos for every job")
    pi.add_argument("--gpu-model", help="GPU type as in `sinfo -o '%%G'` (e.g. a100): --gpus=a100:1 / --gres=gpu:a100:1")
    pi.add_argument(
        "--gpu-request",
        choices=["gpus", "gres"],
        default="gpus",
        help="how GPU jobs ask for their GPU: sbatch --gpus=[model:]1 (default) or --gres=gpu[:model]:1 (sites that accept only --gres)",
    )
    pi.add_argument("--cpus-per-gpu", type=int, help="--cpus-per-gpu for the GPU rules (instead of --cpus-per-task)")
    pi.add_argument("--constraint", help="-C node features for every job, e.g. 'a100|h100'")
    pi.add_argument(
        "--arrays",
        action="store_true",
        help="submit the ready decode/score shards as SLURM job arrays (sets jobs: unlimited; see the README)",
    )
    pi.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any other profile key (a snakemake option without --, e.g. jobs=100, slurm-status-command=squeue) or "
        "set-resources.RULE.RESOURCE / set-threads.RULE / default-resources.RESOURCE=VALUE; repeatable",
    )
    pi.add_argument("--dest", help="directory to write config.yaml into (default: $XDG_CONFIG_HOME/snakemake/<name>)")
    pi.add_argument("--force", action="store_true", help="replace an existing config.yaml")
    pi.add_argument("--print", action="store_true", help="print the profile instead of writing it")
    pi.set_defaults(func=cmd_profile_install)

    d = sub.add_parser("demo-data", help="generate the synthetic demo set")
    d.add_argument("out")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo_data)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("WORMFLOW_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # one clear line for users; the traceback with WORMFLOW_LOG=DEBUG
        log.debug("failed", exc_info=True)
        print(f"wormflow {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
