"""DARTS-PRIME's components on NB201 / Fashion-MNIST: plain DARTS vs each component vs all.

    python benchmarks/prime.py [--seeds 0-2] [--epochs 10] [--C 8] [--N 1] [--limit 6000]
        [--variants darts,clip,fisher,prox,admm,all_prox,all_admm] [--set KEY=VALUE ...]
    [--out runs/bench-nb201]

Every variant is a first-order DARTS search on the NB201 space (first --limit Fashion-MNIST
training images, split 50/50 unless the variant's schedule matches the split f:1), the same
size, epochs and seeds; a finished run directory under --out is reused, an interrupted one
resumed. Prints per variant: the AnalogNAS-Bench CIFAR-10 accuracy of the derived cell (mean,
std), active (unpruned) ops at the end out of 6 x |O|, the spread of the derived genotypes
across seeds (distinct cells, mean pairwise number of edges whose op differs), the alpha steps
taken, and the search's wall time per run.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

import torch
from common import nb201_search

from diffnas.bench import get_table
from diffnas.runs.sweep import parse_seeds
from diffnas.spaces.genotypes import NB201Genotype

CLIP = ["search.activation=clip", "space.node_bn=true"]
FISHER = ["search.alpha_schedule=fisher", "search.alpha_every=10", "search.match_split=true"]
VARIANTS = {
    "darts": [],
    "clip": CLIP,
    "fisher": FISHER,
    "prox": ["search.regularizer=prox"],
    "admm": ["search.regularizer=admm"],
    "all_prox": [*CLIP, *FISHER, "search.regularizer=prox"],
    "all_admm": [*CLIP, *FISHER, "search.regularizer=admm"],
}


def search(args, variant: str, seed: int) -> dict:
    """One search (reused when finished); its last epoch record plus the total epoch time."""
    return nb201_search(Path(args.out) / f"{variant}-s{seed}", args, seed, VARIANTS[variant])


def spread(genotypes: list[str]) -> tuple[int, float]:
    """(number of distinct cells, mean pairwise count of edges whose op differs)."""
    ops = [NB201Genotype.from_string(g).ops for g in genotypes]
    pairs = list(itertools.combinations(ops, 2))
    diff = [sum(a != b for a, b in zip(x, y, strict=True)) for x, y in pairs]
    return len(set(genotypes)), statistics.mean(diff) if diff else 0.0


def main() -> None:
    """Run the searches and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", default="0-2", help="e.g. 0-2 or 0,2 (default 0-2)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--N", type=int, default=1)
    p.add_argument("--limit", type=int, default=6000)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every variant, e.g. search.alpha_lr=0.003",
    )
    p.add_argument("--out", default="runs/bench-nb201", help="shared with nb201_selection.py")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; available: {', '.join(VARIANTS)}")
    table = get_table()
    seeds = parse_seeds(args.seeds)
    rows = {v: [search(args, v, seed) for seed in seeds] for v in variants}

    print()
    print(
        f"NB201 / Fashion-MNIST, DARTS 1st order, C={args.C} N={args.N}, {args.epochs} epochs, "
        f"first {args.limit} training images, seeds {args.seeds}, "
        f"{torch.get_num_threads()} threads; acc = AnalogNAS-Bench CIFAR-10 test accuracy"
        + (f"; overrides: {' '.join(args.set)}" if args.set else "")
    )
    print(
        f"{'variant':9s} {'acc mean':>8s} {'std':>5s} {'active ops':>10s} {'distinct':>8s} "
        f"{'edge diff':>9s} {'alpha steps':>11s} {'wall s':>7s}  per-seed acc"
    )
    for v, rs in rows.items():
        accs = [table.accuracy(NB201Genotype.from_string(r["genotype"])) for r in rs]
        distinct, diff = spread([r["genotype"] for r in rs])
        active = statistics.mean(sum(r["active_ops"].values()) for r in rs)
        print(
            f"{v:9s} {statistics.mean(accs):>8.2f} "
            f"{statistics.stdev(accs) if len(accs) > 1 else 0.0:>5.2f} {active:>10.1f} "
            f"{distinct:>8d} {diff:>9.2f} {statistics.mean(r['alpha_steps'] for r in rs):>11.0f} "
            f"{statistics.mean(r['wall_s'] for r in rs):>7.0f}  "
            + ", ".join(f"{a:.2f}" for a in accs)
        )
    print(f"table: best {table.best()[1]:.2f}, median {table.median_accuracy():.2f}")
    for v, rs in rows.items():
        for seed, r in zip(seeds, rs, strict=True):
            print(f"{v} seed {seed}: {r['genotype']}")


if __name__ == "__main__":
    main()
