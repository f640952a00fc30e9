#!/usr/bin/env python3
"""The measurements behind the CPU scoring settings in ``wormflow.scoring`` and ``wormflow.runtime``.

    python benchmarks/scoring_knobs.py [--reps 5] [--json out.json]

For each method, with untrained models at the configured resolution (speed
does not depend on the weights), on random ``uint8`` batches:

1. **Model batch** (each method's ``cpu_batch``, ``wormflow.methods``): ms per image of the scoring
   forward pass (what ``Scorer`` runs: folded BatchNorm, channels_last, the
   scoring dtype) for model batches of 8 … 64 (ResNet-50 also 256).
2. **bf16 weights vs autocast** (``runtime.inference_dtype``): the same pass
   at the chosen model batch with the weights cast to bf16 once against fp32
   weights under CPU bf16 autocast entered per batch (skipped where the CPU
   has no native bf16).
3. **Scorer set-up** (``Artifact.scorer``/``Artifact.model``): seconds from a loaded
   artifact to a ready scorer, built on the meta device and folded in place,
   against a randomly initialised model that is then loaded and folded as a
   copy.
4. **Colour heuristic** (``colour.colour_ratio``): ms per image, against the
   same arithmetic reducing over the channel dim of the channels_last batch.

Every figure is the best of ``--reps`` timings (the least disturbed by other
work on a shared machine).  CPU only: these are the CPU path's settings.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from wormflow import __version__  # noqa: E402
from wormflow.config import load_config  # noqa: E402
from wormflow.methods import enabled, get  # noqa: E402

# The methods measured (the report's three networks; :func:`forward` knows these) and their model batches.
BATCHES = {"vae": (8, 16, 32, 64), "gan": (8, 16, 32, 64), "resnet50": (8, 16, 32, 64, 256)}


def best_time(fn, reps: int) -> float:
    """Best of ``reps`` timings of ``fn()`` after one warm-up call, in seconds."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def forward(method: str, model, x):
    """The scoring forward pass of each method's ``outputs`` (models only: no features, no colour heuristic)."""
    if method == "vae":
        return model(x)[0]
    if method == "gan":
        recon = model.generator(model.encoder(x))
        model.discriminator.forward_with_features(x)
        return model.discriminator.forward_with_features(recon)
    return model(x)


def images(n: int, size: int) -> torch.Tensor:
    """``n`` random ``uint8`` images as the scorer sees them: ``(n, 3, S, S)``, channels_last in memory."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)


def per_image_ms(method: str, model, x: torch.Tensor, batch: int, reps: int, autocast: bool = False) -> float:
    def run():
        for start in range(0, len(x), batch):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                forward(method, model, x[start : start + batch])

    with torch.inference_mode():
        return 1e3 * best_time(run, reps) / len(x)


def bench_model_batch(method: str, cfg: dict, reps: int) -> dict:
    from wormflow.runtime import inference_dtype
    from wormflow.scoring import fold_batchnorm
    from wormflow.transforms import normalize

    cpu = torch.device("cpu")
    dtype = inference_dtype(cpu)
    base = fold_batchnorm(get(method).build(cfg)).to(memory_format=torch.channels_last)
    model = copy.deepcopy(base).to(dtype)
    x32 = normalize(images(max(BATCHES[method]), cfg["image_size"]), channels_last=True)
    x = x32.to(dtype)
    sweep = {b: per_image_ms(method, model, x, b, reps) for b in BATCHES[method]}
    chosen = get(method).cpu_batch
    out = {"dtype": str(dtype).removeprefix("torch."), "ms_per_image_by_batch": sweep, "chosen": chosen}
    if dtype == torch.bfloat16:
        autocast_ms = per_image_ms(method, base, x32, chosen, reps, autocast=True)
        out["autocast_fp32_weights_ms"] = autocast_ms
        out["bf16_weights_speedup"] = autocast_ms / sweep[chosen]
    return out


def bench_setup(method: str, cfg: dict, reps: int, work: Path) -> dict:
    from wormflow.artifact import Artifact
    from wormflow.scoring import Scorer

    sys.path.insert(0, str(REPO / "benchmarks"))
    from throughput import untrained_artifact

    path = work / method / "model.pt"
    untrained_artifact(method, cfg, path)
    art = Artifact.load(path)
    cpu = torch.device("cpu")

    def random_init_then_load():
        model = get(method).build(art.config)
        model.load_state_dict(art.state_dict)
        return Scorer(method, model, art.config, cpu, None, art.threshold)

    return {
        "meta_device_s": best_time(lambda: art.scorer("cpu"), reps),
        "random_init_then_load_s": best_time(random_init_then_load, reps),
        "artifact_mb": path.stat().st_size / 1e6,
    }


def _colour_channel_reduction(images, alpha, beta):
    """The colour heuristic's arithmetic reducing over dim 1 of the batch as it comes (channels_last)."""
    x = images.float()
    b = x.shape[0]
    mu = x.mean(dim=(2, 3), keepdim=True)
    idx = (x - mu).abs().sum(dim=1).flatten(1).argmax(dim=1)
    u = x.flatten(2).gather(2, idx.view(b, 1, 1).expand(b, 3, 1)).view(b, 3, 1, 1)
    a = torch.as_tensor(alpha).view(1, 3, 1, 1)
    be = torch.as_tensor(beta).view(1, 3, 1, 1)
    mask = ((x >= u - a * u) & (x <= u + be * u)).all(dim=1)
    return mask.float().mean(dim=(1, 2)), mask


def bench_colour(cfg: dict, reps: int) -> dict:
    from wormflow.colour import colour_ratio

    x = images(32, cfg["image_size"])
    alpha, beta = cfg["colour"]["alpha"], cfg["colour"]["beta"]
    want = _colour_channel_reduction(x, alpha, beta)
    got = colour_ratio(x, alpha, beta)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1]), "the two colour paths disagree"
    ms = {
        "colour_ratio_ms": 1e3 * best_time(lambda: colour_ratio(x, alpha, beta), reps) / len(x),
        "channel_dim_reduction_ms": 1e3 * best_time(lambda: _colour_channel_reduction(x, alpha, beta), reps) / len(x),
    }
    ms["speedup"] = ms["channel_dim_reduction_ms"] / ms["colour_ratio_ms"]
    return ms


def main(argv=None) -> dict:
    import tempfile

    cfg = load_config()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--methods",
        nargs="+",
        default=[m for m in enabled(cfg) if m in BATCHES],
        choices=list(BATCHES),
        help="default: those enabled in config.yaml, in its order",
    )
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    result = {
        "command": " ".join(["benchmarks/scoring_knobs.py", *(argv if argv is not None else sys.argv[1:])]),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "wormflow": __version__,
        },
        "methods": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.methods:
            mcfg = cfg["methods"][m]
            r = {"model_batch": bench_model_batch(m, mcfg, args.reps), "setup": bench_setup(m, mcfg, args.reps, Path(tmp))}
            if "colour" in mcfg:  # the colour heuristic of the anomaly methods
                r["colour"] = bench_colour(mcfg, args.reps)
            result["methods"][m] = r
            print(f"[{m}] {json.dumps(r)}", flush=True)
    result["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
