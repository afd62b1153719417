"""Architecture selection on NB201 / Fashion-MNIST: magnitude vs perturbation (DARTS-PT), scored
by the ground truth of the selected cells.

    python benchmarks/nb201_selection.py [--seeds 0-2] [--epochs 10] [--C 8] [--N 1]
        [--limit 6000] [--proj-intv 5] [--threads 0] [--set KEY=VALUE ...]
        [--out runs/bench-nb201] [--no-table]

Stages per seed, each reused when finished and resumed when interrupted (so the script can be
run again after a kill, or once per seed in parallel and then once more for the table):
1. `darts-s<seed>`: a first-order DARTS search (the first --limit Fashion-MNIST training images
   split 50/50, --epochs epochs, DARTS' other defaults); the same run as `prime.py`'s `darts`
   variant when both use the same --out;
2. `fixalpha-s<seed>`: the same search with `search.fix_alpha` (uniform alphas, no alpha steps);
3. selection: magnitude (the NB201 argmax) on the DARTS supernet; perturbation on both
   supernets (`diffnas select --method perturbation`, `select.proj_intv` --proj-intv, DARTS-PT's
   other defaults).
Prints per method the AnalogNAS-Bench CIFAR-10 accuracy of each selected cell, mean and std,
wall time per stage (search; decisions and tuning of the selection) and the mean time of one
decision, plus the table's best and median cells.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from common import mean_std, nb201_search

from diffnas.bench import get_table
from diffnas.runs.sweep import parse_seeds
from diffnas.select import open_select_dir, run_select
from diffnas.spaces.genotypes import NB201Genotype

SUPERNETS = {"darts": [], "fixalpha": ["search.fix_alpha=true"]}
# (row name, supernet, selection method); magnitude on the fix-alpha supernet would only read
# ties off uniform weights.
METHODS = (
    ("DARTS (magnitude)", "darts", "magnitude"),
    ("DARTS+PT", "darts", "perturbation"),
    ("DARTS+PT (fix alpha)", "fixalpha", "perturbation"),
)


def select(search_dir: Path, method: str, proj_intv: int) -> dict:
    """The selection's result.json (the selection run, resumed or reused as needed)."""
    out = search_dir / f"select-{method}"
    if not (out / "result.json").exists():
        resume = (out / "checkpoint.pt").exists() or (out / "checkpoint.prev.pt").exists()
        overrides = [] if resume else [f"select.proj_intv={proj_intv}", "run.progress=false"]
        cfg, run = open_select_dir(search_dir, method, overrides, resume=resume)
        run_select(cfg, search_dir, run, resume=resume, log=lambda s: None)
        print(f"  {search_dir.name}: {method} selection done", flush=True)
    return json.loads((out / "result.json").read_text())


def seed_rows(args, seed: int) -> dict[str, dict]:
    """Every stage of one seed; per method row: genotype, search and selection times."""
    searches = {
        name: nb201_search(Path(args.out) / f"{name}-s{seed}", args, seed, overrides)
        for name, overrides in SUPERNETS.items()
    }
    rows = {}
    for row, supernet, method in METHODS:
        r = select(Path(args.out) / f"{supernet}-s{seed}", method, args.proj_intv)
        rows[row] = {
            "genotype": r["genotype"],
            "search_s": searches[supernet]["wall_s"],
            "decide_s": r.get("decision_time_s", r.get("select_time_s", 0.0)),
            "decisions": r.get("decisions", 0),
            "tune_s": r.get("tune_time_s", 0.0),
        }
    return rows


def main() -> None:
    """Run the stages and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", default="0-2", help="e.g. 0-2 or 0,2 (default 0-2)")
    p.add_argument("--epochs", type=int, default=10, help="supernet search epochs")
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--N", type=int, default=1)
    p.add_argument("--limit", type=int, default=6000, help="Fashion-MNIST training images used")
    p.add_argument("--proj-intv", type=int, default=5, help="DARTS-PT tuning epochs per decision")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="runs/bench-nb201", help="shared with prime.py")
    p.add_argument("--no-table", action="store_true", help="run the stages only")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    per_seed = {seed: seed_rows(args, seed) for seed in seeds}
    if args.no_table:
        return
    table = get_table()

    print()
    print(
        f"NB201 / Fashion-MNIST: supernet C={args.C} N={args.N}, {args.epochs} epochs of DARTS "
        f"1st order on the first {args.limit} training images (50/50 train/val), DARTS-PT "
        f"proj_intv {args.proj_intv}, seeds {args.seeds}, {torch.get_num_threads()} threads; "
        "acc = AnalogNAS-Bench CIFAR-10 test accuracy of the selected cell"
    )
    print(
        f"{'method':22s} {'acc mean':>8s} {'std':>5s}  {'search s':>8s} {'decide s':>8s} "
        f"{'s/decision':>10s} {'tune s':>7s}  per-seed acc"
    )
    for row, _, _ in METHODS:
        rs = [per_seed[s][row] for s in seeds]
        accs = [table.accuracy(NB201Genotype.from_string(r["genotype"])) for r in rs]
        mean, std = mean_std(accs)
        decisions = sum(r["decisions"] for r in rs)
        per_decision = sum(r["decide_s"] for r in rs) / decisions if decisions else 0.0
        print(
            f"{row:22s} {mean:>8.2f} {std:>5.2f}  "
            f"{statistics.mean(r['search_s'] for r in rs):>8.0f} "
            f"{statistics.mean(r['decide_s'] for r in rs):>8.1f} {per_decision:>10.2f} "
            f"{statistics.mean(r['tune_s'] for r in rs):>7.0f}  "
            + ", ".join(f"{a:.2f}" for a in accs)
        )
    best_arch, best_acc = table.best()
    print(f"table: best {best_acc:.2f} ({best_arch}), median {table.median_accuracy():.2f}")
    for seed in seeds:
        for row, _, _ in METHODS:
            print(f"seed {seed} {row}: {per_seed[seed][row]['genotype']}")


if __name__ == "__main__":
    main()
