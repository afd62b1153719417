"""Final training on Fashion-MNIST: DARTS_V2 vs a random DARTS-space genotype vs a genotype found
by our own DARTS search, same recipe and budget, several seeds.

    python benchmarks/image_train.py [--seeds 2] [--epochs 10] [--C 8] [--layers 5]
        [--limit 10000] [--searched RUN_DIR] [--out runs/bench-image-train]

Stages (each reuses a finished run directory under --out and resumes an interrupted one, so an
interrupted benchmark continues where it stopped):
1. unless --searched gives a finished DARTS-space search, a first-order DARTS search on the
   DARTS space (C=--search-C, --search-layers cells, the first --search-limit training images
   split 50/50, --search-epochs epochs, DARTS' other defaults);
2. for each genotype and seed, `diffnas train` with the DARTS recipe (configs/train_darts.toml:
   SGD 0.025 cosine, batch 96, wd 3e-4, cutout 16, drop-path 0.2, auxiliary head 0.4, grad clip
   5) at the reduced size --C/--layers/--epochs on the first --limit training images, tested on
   the whole 10,000-image test split.
Prints test accuracy mean +- std over the seeds, parameters, and training wall time per run
(the sum of the epoch times in metrics.jsonl, so resumed runs count only their epochs).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from importlib import resources
from pathlib import Path

import torch
from common import run_stage

from diffnas.runs.rundir import RunDir
from diffnas.search.loop import run_search
from diffnas.spaces.darts_cnn import random_genotype
from diffnas.train import train_image

RANDOM_SEED = 0  # the random genotype is drawn once, with this seed


def search_stage(args) -> tuple[str, float]:
    """The genotype found by a short DARTS search (or the given run's), and the search time."""
    if args.searched:
        return str(Path(args.searched)), 0.0
    path = Path(args.out) / "search"
    if not (path / "genotype.json").exists():
        overrides = [
            "space.name=darts",
            f"space.C={args.search_C}",
            f"space.layers={args.search_layers}",
            "data.dataset=fashion_mnist",
            f"data.limit={args.search_limit}",
            f"search.epochs={args.search_epochs}",
            f"run.threads={args.threads}",
            "run.progress=false",
        ]
        run_stage(
            path, None, overrides, run_search, log=lambda s: print("  search:", s.splitlines()[0])
        )
    seconds = sum(r.get("epoch_time_s", 0) for r in RunDir(path).read_metrics())
    return str(path), seconds


def train_stage(args, name: str, genotype: str, seed: int) -> dict:
    """Train one genotype with one seed; returns its result plus the training time."""
    path = Path(args.out) / f"{name}-s{seed}"
    run = RunDir(path)
    if not (path / "result.json").exists():
        recipe = str(resources.files("diffnas") / "configs" / "train_darts.toml")
        overrides = [
            f"train.genotype={genotype}",
            f"train.C={args.C}",
            f"train.layers={args.layers}",
            f"train.epochs={args.epochs}",
            f"data.limit={args.limit}",
            f"run.seed={seed}",
            f"run.threads={args.threads}",
            "run.progress=false",
        ]
        t0 = time.perf_counter()
        run_stage(path, recipe, overrides, train_image, log=lambda s: None)
        print(f"  {name} seed {seed}: done in {time.perf_counter() - t0:.0f}s")
    result = json.loads((path / "result.json").read_text())
    result["train_s"] = sum(r.get("epoch_time_s", 0) for r in run.read_metrics())
    return result


def main() -> None:
    """Run the stages and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--searched", help="a finished DARTS-space search run directory")
    p.add_argument("--search-C", type=int, default=8)
    p.add_argument("--search-layers", type=int, default=5)
    p.add_argument("--search-limit", type=int, default=5000)
    p.add_argument("--search-epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="runs/bench-image-train")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print("stage 1: the searched genotype")
    searched, search_s = search_stage(args)
    runs = [  # (run name, table label, genotype as `train.genotype` takes it)
        ("darts_v2", "DARTS_V2", "DARTS_V2"),
        (
            "random",
            f"random (seed {RANDOM_SEED})",
            str(random_genotype(random.Random(RANDOM_SEED))),
        ),
        ("ours", "ours (DARTS 1st order)", searched),
    ]
    print("stage 2: training")
    results = {
        label: [train_stage(args, name, g, seed) for seed in range(args.seeds)]
        for name, label, g in runs
    }

    print()
    print(
        f"Fashion-MNIST final training: DARTS recipe at C={args.C}, L={args.layers}, "
        f"{args.epochs} epochs, first {args.limit} training images, 10,000 test images, "
        f"{args.seeds} seeds, {torch.get_num_threads()} threads"
    )
    if not args.searched:
        print(
            f"search: DARTS 1st order, DARTS space C={args.search_C} L={args.search_layers}, "
            f"{args.search_limit} images (50/50), {args.search_epochs} epochs: {search_s:.0f}s"
        )
    print(f"{'genotype':26s} {'params':>8s} {'test acc %':>16s} {'train s/run':>12s}  per seed")
    for label, rs in results.items():
        accs = [r["test_acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        secs = statistics.mean(r["train_s"] for r in rs)
        print(
            f"{label:26s} {rs[0]['params']:>8,d} {statistics.mean(accs):>8.2f} +- {std:<5.2f} "
            f"{secs:>12.0f}  {', '.join(f'{a:.2f}' for a in accs)}"
        )
    for label, rs in results.items():
        print(f"{label}: {rs[0]['genotype']}")


if __name__ == "__main__":
    main()
