#!/usr/bin/env python3
"""Throughput benchmark: decode-once, end-to-end scoring, report-style loop, training.

    python benchmarks/throughput.py [--n 256] [--device auto] [--json out.json]

Measured in one run, on the same images (1-megapixel JPEGs made from real
BBBC010 patches, like the microscope exports labs feed the workflow):

1. **Decode once**: manifest + ``decode_shard_step`` into a shard image store
   (uint8 at every method's resolution, gzip) — img/s, and HDF5 bytes per
   image per resolution for each compression setting.
2. **End-to-end scoring per method**: ``score_shard_step`` with that
   method's model alone (image store → model → HDF5 score part with
   scores, reconstructions and maps), img/s; and the model-side rate alone
   (batches already on the device).
3. **Report-style loop** over the same JPEGs: ImageFolder-style list, PIL
   decode + Resize + ToDtype + Normalize per image, batch 8, fp32, NCHW, the
   same outputs computed per batch and kept in memory — img/s; the ratio of
   (2) to (3), also with the decode-once cost shared by the three methods
   added to (2).
4. **Training**: images/s of one epoch loop per method with the workflow's
   settings (bf16 autocast + channels_last on CUDA, large batch) against the
   report's (fp32, NCHW, report batch size), on in-memory data.

Models are untrained (speed does not depend on the weights).  Works on the
CPU; uses CUDA when present.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from wormflow import __version__  # noqa: E402
from wormflow.config import load_config  # noqa: E402
from wormflow.methods import enabled, get  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "bbbc010" / "labeled"
# The report's three methods: the report-style reference loop (3.) and the report-settings training
# loop (4.) below reproduce the report's own code for these, and only these.
REPORT_METHODS = ("vae", "gan", "resnet50")


# --------------------------------------------------------------------------- inputs


def make_jpegs(out: Path, n: int, side: int, data: Path) -> list[Path]:
    """``n`` side×side JPEGs built from real patches (upscaled, tiled, with sensor noise)."""
    from concurrent.futures import ProcessPoolExecutor

    out.mkdir(parents=True, exist_ok=True)
    patches = sorted(str(p) for p in data.glob("*/*/*.png"))
    if not patches:
        raise SystemExit(f"no patches under {data}")
    paths = [out / f"img_{i:06d}.jpg" for i in range(n)]
    todo = [(i, str(p), side, patches) for i, p in enumerate(paths) if not p.exists()]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_make_jpeg, todo, chunksize=16))
    return paths


def _make_jpeg(job) -> None:
    from PIL import Image

    i, path, side, patches = job
    rng = np.random.default_rng(i)
    tiles = [np.asarray(Image.open(patches[(i * 4 + k) % len(patches)]).convert("RGB")) for k in range(4)]
    grid = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
    big = np.asarray(Image.fromarray(grid).resize((side, side), Image.Resampling.BILINEAR)).astype(np.int16)
    big = np.clip(big + rng.normal(0, 3, big.shape), 0, 255).astype(np.uint8)
    Image.fromarray(big).save(path, quality=90)


def untrained_artifact(method: str, cfg: dict, path: Path) -> None:
    """A real-architecture artifact with random weights, a neutral combiner (anomaly methods) and threshold 0.5."""
    from wormflow.artifact import Artifact
    from wormflow.decision import Combiner
    from wormflow.methods.anomaly import AnomalyMethod

    spec = get(method)
    names, logs = list(spec.feature_names), list(spec.log_features)
    comb = (
        Combiner(names, [0.0] * len(names), [1.0] * len(names), [0.1] * len(names), 0.0, log_features=logs).to_dict()
        if isinstance(spec, AnomalyMethod)
        else None
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Artifact(
        method=method,
        config=cfg,
        state_dict=spec.build(cfg).state_dict(),
        threshold=0.5,
        threshold_rule="benchmark",
        dev_f1=float("nan"),
        combiner=comb,
        config_hash="benchmark",
        weights_init="random (benchmark)",
        seed=0,
        epochs_run=0,
        best_epoch=-1,
        stopped_early=False,
        device="n/a",
        train_time_s=0.0,
        n_train=0,
        n_dev=0,
        dev_scores=[],
        dev_labels=[],
        trained_utc="",
    ).save(path)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- 1. decode once


def bench_decode(jpeg_dir: Path, work: Path, sizes: list[int], cfg: dict, threads: int) -> dict:
    from wormflow.pipeline import decode_shard_step, manifest_step

    manifest = manifest_step(str(jpeg_dir), str(work / "manifest.json"), labeled=False, shard_size=10**6)
    store = work / "0.images.h5"
    t0 = time.perf_counter()
    decode_shard_step(
        str(work / "manifest.json"),
        0,
        str(store),
        sizes=sizes,
        threads=threads,
        limits=cfg["decode"],
        hdf5=cfg["hdf5"],
    )
    dt = time.perf_counter() - t0
    n = len(manifest.candidates)
    return {
        "images": n,
        "seconds": dt,
        "img_per_s": n / dt,
        "threads": threads,
        "store": str(store),
        "store_bytes_per_image": store.stat().st_size / n,
    }


def bench_compression(store: Path, sizes: list[int]) -> dict:
    """HDF5 bytes per image and write time for each compression choice (on the decoded images)."""
    import h5py

    from wormflow.store import compression_kwargs, write_chunked

    out = {}
    with h5py.File(store, "r") as f:
        arrays = {s: f["images"][str(s)][:1024] for s in sizes}
    for name, hcfg in (
        ("none", {"compression": "none"}),
        ("lzf", {"compression": "lzf"}),
        ("gzip-1", {"compression": "gzip", "level": 1}),
        ("gzip-4", {"compression": "gzip", "level": 4}),
        ("gzip-9", {"compression": "gzip", "level": 9}),
    ):
        row = {}
        for s, arr in arrays.items():
            with tempfile.NamedTemporaryFile(suffix=".h5") as tmp:
                t0 = time.perf_counter()
                with h5py.File(tmp.name, "w") as f:
                    write_chunked(f, "x", arr, 16, compression_kwargs(hcfg))
                dt = time.perf_counter() - t0
                row[str(s)] = {"bytes_per_image": os.path.getsize(tmp.name) / len(arr), "write_img_per_s": len(arr) / dt}
        out[name] = row
    return out


# --------------------------------------------------------------------------- 2. end-to-end scoring


def bench_score(method: str, cfg: dict, store: str, art_path: Path, index: Path, device: str, batch: int) -> dict:
    """Model-side rate and HDF5 size; the end-to-end rate is timed by :func:`e2e_rate` (interleaved)."""
    from wormflow.artifact import Artifact
    from wormflow.pipeline import read_score_index
    from wormflow.store import ImageStore

    n = len(ImageStore.open(store))
    e2e_rate(method, store, art_path, index, batch, device)  # warm-up (and the score part whose size is reported)
    part = Path(read_score_index(str(index))[0].path)
    # model side: one batch already on the device, repeated
    scorer = Artifact.load(art_path).scorer(device)
    images = ImageStore.open(store).images(cfg["image_size"])[:batch]
    x = torch.as_tensor(images).to(scorer.device)
    for _ in range(2):
        scorer.raw(x)
    sync(scorer.device)
    t0 = time.perf_counter()
    k = 3
    for _ in range(k):
        scorer.raw(x)
    sync(scorer.device)
    model_side = k * len(images) / (time.perf_counter() - t0)
    return {
        "images": n,
        "model_img_per_s": model_side,
        "batch": batch,
        "bytes_per_image": part.stat().st_size / n,
    }


def e2e_rate(method: str, store: str, art_path: Path, index: Path, batch: int, device: str) -> float:
    """One ``score_shard_step`` with this one model (image store → model → HDF5 score part): images per second.

    ``index`` is the shard's ``<name>.scores.json``; its ``<name>.parts/`` is emptied first, so that the
    step scores anew instead of reusing the part an earlier repetition wrote."""
    import shutil

    from wormflow.pipeline import score_shard_step
    from wormflow.store import ImageStore

    n = len(ImageStore.open(store))
    shutil.rmtree(index.with_name(index.name.removesuffix(".scores.json") + ".parts"), ignore_errors=True)
    t0 = time.perf_counter()
    score_shard_step(store, {method: {0: str(art_path)}}, str(index), batch_size=batch, device=device, shard_size=10**6)
    return n / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- 3. report-style loop


class _Folder(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB")), 0


def report_validation_transform(size: int = 224):
    """The report's validation pipeline from a PIL image: Resize, ToTensor, Normalize(0.5, 0.5).

    (Formerly ``wormflow.transforms``; the workflow no longer uses it: only this reference loop does.)"""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )


def bench_report_loop(method: str, cfg: dict, paths: list[Path], device: torch.device) -> dict:
    """The report's way: PIL per image, batch 8, fp32, NCHW; same outputs, kept in memory.

    A reference implementation of the report's code, not the workflow: it branches on the report's
    three method names (:data:`REPORT_METHODS`) on purpose."""
    from wormflow.colour import colour_ratio

    if method not in REPORT_METHODS:
        raise ValueError(f"the report-style loop knows only {', '.join(REPORT_METHODS)}, not {method!r}")
    model = get(method).build(cfg).to(device).eval()
    loader = torch.utils.data.DataLoader(
        _Folder(paths, report_validation_transform(cfg["image_size"])), batch_size=8, num_workers=0
    )
    keep = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for x, _ in loader:
            x = x.to(device)
            if method == "vae":
                recon, _, _ = model(x)
            elif method == "gan":
                recon = model.generator(model.encoder(x))
                model.discriminator.forward_with_features(x)
                model.discriminator.forward_with_features(recon)
            else:
                keep.append(torch.sigmoid(model(x)).cpu().numpy())
                continue
            x255 = ((x + 1) * 127.5).cpu()
            for i in range(len(x)):  # the report computes its heuristic image by image
                colour_ratio(x255[i : i + 1], cfg["colour"]["alpha"], cfg["colour"]["beta"])
            keep.append(((recon - x).abs().mean(1)).cpu().numpy())
    sync(device)
    dt = time.perf_counter() - t0
    return {"images": len(paths), "img_per_s": len(paths) / dt, "batch": 8}


# --------------------------------------------------------------------------- 4. training


def _train_rate(method: str, cfg: dict, n: int, device: torch.device, tuned: bool, steps: int) -> float:
    """Images/s of training steps on in-memory data: tuned = the workflow's epoch functions; else fp32 NCHW."""
    import torch.nn.functional as F

    from wormflow.methods.gan import gan_epoch
    from wormflow.methods.resnet50 import focal_loss
    from wormflow.methods.vae import vae_epoch, vae_loss
    from wormflow.runtime import autocast
    from wormflow.transforms import normalize

    spec = get(method)
    model = spec.build(cfg).to(device)
    opts = spec.optimizers(model, cfg)
    size = cfg["image_size"]
    data = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8).to(device).permute(0, 3, 1, 2)
    bs = cfg["batch_size"]
    if tuned:
        model = model.to(memory_format=torch.channels_last)
        cfg1 = {**cfg}
        if method == "resnet50":
            labels = torch.randint(0, 2, (n,), device=device).float()

            def step(idx):
                x = normalize(data[idx], channels_last=True)
                with autocast(device):
                    logits = model(x).flatten()
                loss = focal_loss(logits, labels[idx])
                opts["model"].zero_grad(set_to_none=True)
                loss.backward()
                opts["model"].step()

            run = lambda: [step(i) for i in torch.randperm(n, device=device).split(bs)]  # noqa: E731
        elif method == "vae":
            run = lambda: vae_epoch(model, opts["model"], data, cfg1)  # noqa: E731
        else:
            run = lambda: gan_epoch(model, opts, data, cfg1)  # noqa: E731
    else:
        data = data.contiguous()
        labels = torch.randint(0, 2, (n,), device=device).float()

        def run():
            for idx in torch.randperm(n, device=device).split(bs):
                x = data[idx].float() / 127.5 - 1
                if method == "vae":
                    recon, mu, logvar = model(x)
                    loss = vae_loss(recon, x, mu, logvar)[0]
                    opts["model"].zero_grad()
                    loss.backward()
                    opts["model"].step()
                elif method == "resnet50":
                    loss = focal_loss(model(x).flatten(), labels[idx])
                    opts["model"].zero_grad()
                    loss.backward()
                    opts["model"].step()
                else:
                    g, d = model.generator, model.discriminator
                    fake = g(torch.randn(len(idx), cfg["nz"], device=device))
                    ld = F.binary_cross_entropy_with_logits(
                        d(x), torch.ones(len(idx), device=device)
                    ) + F.binary_cross_entropy_with_logits(d(fake.detach()), torch.zeros(len(idx), device=device))
                    opts["discriminator"].zero_grad()
                    ld.backward()
                    opts["discriminator"].step()
                    lg = F.binary_cross_entropy_with_logits(d(fake), torch.ones(len(idx), device=device))
                    opts["generator"].zero_grad()
                    lg.backward()
                    opts["generator"].step()

    run()  # warm-up (cuDNN autotuning)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    sync(device)
    return steps * n / (time.perf_counter() - t0)


def bench_training(cfg: dict, device: torch.device, methods: list[str], n: int, steps: int, tuned_batch: dict) -> dict:
    out = {}
    for m in methods:
        report_cfg = copy.deepcopy(cfg["methods"][m])
        tuned_cfg = {**report_cfg, "batch_size": tuned_batch[m]}
        out[m] = {
            "report": {"batch": report_cfg["batch_size"], "img_per_s": _train_rate(m, report_cfg, n, device, False, steps)},
            "tuned": {"batch": tuned_cfg["batch_size"], "img_per_s": _train_rate(m, tuned_cfg, n, device, True, steps)},
        }
        out[m]["speedup"] = out[m]["tuned"]["img_per_s"] / out[m]["report"]["img_per_s"]
        print(
            f"[train] {m}: report {out[m]['report']['img_per_s']:.0f} img/s, tuned {out[m]['tuned']['img_per_s']:.0f} img/s",
            flush=True,
        )
    return out


# --------------------------------------------------------------------------- main


def environment(device: torch.device) -> dict:
    import h5py

    from wormflow.runtime import inference_dtype

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "h5py": h5py.__version__,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({platform.machine()})",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # scoring precision on this machine (bf16 weights on CPUs with native bf16, bf16 autocast on CUDA)
        "scoring_dtype": "bfloat16" if device.type == "cuda" else str(inference_dtype(device)).removeprefix("torch."),
        "cpu_model_batch": {m: get(m).cpu_batch for m in REPORT_METHODS},
        "wormflow": __version__,
        "host": platform.node(),
    }


def main(argv=None) -> dict:
    cfg = load_config()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=128, help="images (1-megapixel JPEGs) for the scoring benchmarks")
    p.add_argument("--side", type=int, default=1024)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--methods",
        nargs="+",
        default=[m for m in enabled(cfg) if m in REPORT_METHODS],
        choices=REPORT_METHODS,
        help="the report's methods (default: those enabled in config.yaml, in its order)",
    )
    p.add_argument("--batch", type=int, default=256, help="scoring batch of the workflow path")
    p.add_argument("--reps", type=int, default=3, help="alternating repetitions of the two scoring paths (medians reported)")
    p.add_argument("--report-n", type=int, default=None, help="images for the report-style loop (default: --n)")
    p.add_argument("--train-n", type=int, default=256, help="images per training epoch loop")
    p.add_argument("--train-steps", type=int, default=1)
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--work", default=None)
    p.add_argument("--json", default=None, help="write the figures here too")
    args = p.parse_args(argv)

    from wormflow.runtime import select_device

    device = select_device(args.device)
    work = Path(args.work or tempfile.mkdtemp(prefix="wormflow-throughput-"))
    sizes = sorted({cfg["methods"][m]["image_size"] for m in args.methods})
    jpegs = make_jpegs(work / "jpegs", args.n, args.side, Path(args.data))
    result = {
        "environment": environment(device),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "n_images": args.n,
        "image_side": args.side,
    }
    print(f"[env] {result['environment']}", flush=True)
    result["decode"] = bench_decode(work / "jpegs", work / "store", sizes, cfg, threads=os.cpu_count() or 1)
    print(f"[decode] {result['decode']['img_per_s']:.1f} img/s with {result['decode']['threads']} threads", flush=True)
    result["compression"] = bench_compression(Path(result["decode"]["store"]), sizes)
    result["scoring"] = {}
    report_paths = jpegs[: args.report_n or args.n]
    for m in args.methods:
        mcfg = cfg["methods"][m]
        store = result["decode"]["store"]
        art, scores = work / "models" / m / "model.pt", work / f"{m}.scores.json"
        untrained_artifact(m, mcfg, art)
        ours = bench_score(m, mcfg, store, art, scores, args.device, args.batch)
        # the two paths alternate, --reps times, so that a slow spell of a shared machine hits both
        e2e, rep = [], []
        for _ in range(args.reps):
            e2e.append(e2e_rate(m, store, art, scores, args.batch, args.device))
            rep.append(bench_report_loop(m, mcfg, report_paths, device)["img_per_s"])
        ratios = [a / b for a, b in zip(e2e, rep)]
        decode_share = 1.0 / (result["decode"]["img_per_s"] * len(args.methods))
        ours.update(
            reps=args.reps,
            e2e_img_per_s=float(np.median(e2e)),
            e2e_img_per_s_all=e2e,
            report_style_img_per_s=float(np.median(rep)),
            report_style_img_per_s_all=rep,
            ratio=float(np.median(ratios)),
            ratio_all=ratios,
            e2e_with_shared_decode_img_per_s=1.0 / (1.0 / float(np.median(e2e)) + decode_share),
        )
        ours["ratio_with_shared_decode"] = ours["e2e_with_shared_decode_img_per_s"] / ours["report_style_img_per_s"]
        result["scoring"][m] = ours
        print(
            f"[score] {m}: e2e {ours['e2e_img_per_s']:.1f} img/s (model {ours['model_img_per_s']:.1f}), "
            f"report-style {ours['report_style_img_per_s']:.1f} img/s, ratio {ours['ratio']:.2f} "
            f"(per repetition {', '.join(f'{r:.2f}' for r in ratios)}; {ours['ratio_with_shared_decode']:.2f} with the shared decode)",
            flush=True,
        )
    if not args.no_train:
        tuned_batch = (
            {"vae": 512, "gan": 512, "resnet50": 256} if device.type == "cuda" else {"vae": 64, "gan": 64, "resnet50": 32}
        )
        result["training"] = bench_training(cfg, device, args.methods, args.train_n, args.train_steps, tuned_batch)
    result["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]  # other work on the machine
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
