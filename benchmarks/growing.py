"""Growing DARTS vs a fixed-size search at the maximum size: quality, search time, edge-epochs.

    python benchmarks/growing.py [--tasks cnn_fmnist] [--seeds 1] [--epochs 8] [--C 8]
        [--layers 5] [--limit 4000] [--start-nodes 1] [--max-nodes 4] [--trigger every]
        [--grow-every 2] [--train-epochs 5] [--out runs/bench-growing]

For every task and seed, three first-order DARTS searches with the same budget:
- `fixed`: the usual search at the maximum size (`--max-nodes` intermediate nodes per cell);
- `grow_then_prune`: `search.grower=morphism` from `--start-nodes` up to `--max-nodes`
  (`--trigger every` every `--grow-every` epochs, or `plateau`), one derivation at the end;
- `grow_and_prune`: the same growth, the older nodes pruned to their 2 derived edges after
  each growth.
The genotype each search derives is then trained from scratch with the same recipe and budget
(configs/train_darts.toml at `--train-C`/`--train-layers`/`--train-epochs` on the first
`--train-limit` training images); its accuracy on the held-out split (the whole test split:
`diffnas train` has no separate validation split) is the quality column.

Columns: held-out accuracy of the derived cell after final training, search wall time (sum of
the epoch times), and edge-epochs, the sum over search epochs of the edges that ran (alpha rows
with a non-zero weight, normal + reduction cell types; per cell type, not per cell). The claim
under test (ALGORITHMS.md 5.1): growing makes the search cheaper at comparable quality; the
verdict line says whether these numbers show it (quality within `--tolerance` points of fixed).

Every stage reuses a finished run directory under --out and resumes an interrupted one. Tasks
are entries of `TASKS`: the PTB language model and a forecasting set plug in there as more rows
(a function returning one result dict per variant and seed) once their spaces can grow.
"""

from __future__ import annotations

import argparse
import json
import statistics
from importlib import resources
from pathlib import Path

import torch
from common import run_stage

from diffnas.runs.rundir import RunDir
from diffnas.search.loop import run_search
from diffnas.train import train_image


def growth_overrides(args, mode: str) -> list[str]:
    """The [search]/[space] keys of a growing search in `mode`."""
    return [
        f"space.steps={args.start_nodes}",
        f"space.multiplier={args.start_nodes}",
        "search.grower=morphism",
        f"search.grow_max_nodes={args.max_nodes}",
        f"search.grow_trigger={args.trigger}",
        f"search.grow_every={args.grow_every}",
        f"search.grow_patience={args.patience}",
        f"search.grow_threshold={args.threshold}",
        f"search.grow_mode={mode}",
    ]


# Variant name -> its search overrides (on top of the task's base search).
VARIANTS = {
    "fixed": lambda a: [f"space.steps={a.max_nodes}", f"space.multiplier={a.max_nodes}"],
    "grow_then_prune": lambda a: growth_overrides(a, "grow_then_prune"),
    "grow_and_prune": lambda a: growth_overrides(a, "grow_and_prune"),
}


def edge_epochs(path: Path) -> int:
    """Sum over epochs of the edges that ran: the grower's `active_edges` record, else the
    non-zero rows of the epoch's logged edge weights (a run that never grows)."""
    epochs = [r for r in RunDir(path).read_metrics() if r["kind"] == "epoch"]
    if all("active_edges" in r for r in epochs):
        return sum(r["active_edges"] for r in epochs)
    total = 0
    for line in (path / "genotypes.jsonl").read_text().splitlines():
        weights = json.loads(line)["genotype"]["weights"]
        total += sum(any(v != 0 for v in row) for w in weights.values() for row in w)
    return total


def cnn_search(args, path: Path, seed: int, variant: str) -> dict:
    """A DARTS-space search on the image set, reused or resumed; its summary."""
    if not (path / "genotype.json").exists():
        base = [
            "space.name=darts",
            f"space.C={args.C}",
            f"space.layers={args.layers}",
            f"data.dataset={args.dataset}",
            f"data.limit={args.limit}",
            f"search.epochs={args.epochs}",
            f"run.seed={seed}",
            f"run.threads={args.threads}",
            "run.progress=false",
        ]
        overrides = [*base, *VARIANTS[variant](args), *args.set]
        run_stage(path, None, overrides, run_search, log=lambda s: None)
    epochs = [r for r in RunDir(path).read_metrics() if r["kind"] == "epoch"]
    return {
        "search_s": sum(r["epoch_time_s"] for r in epochs),
        "edge_epochs": edge_epochs(path),
        "nodes": [r.get("nodes", args.max_nodes) for r in epochs],
        "search_valid_acc": epochs[-1]["valid_acc"],
    }


def cnn_train(args, path: Path, genotype: Path, seed: int) -> dict:
    """Final training of a searched genotype with the DARTS recipe at the benchmark's size."""
    if not (path / "result.json").exists():
        recipe = str(resources.files("diffnas") / "configs" / "train_darts.toml")
        overrides = [
            f"train.genotype={genotype}",
            f"train.C={args.train_C}",
            f"train.layers={args.train_layers}",
            f"train.epochs={args.train_epochs}",
            f"data.dataset={args.dataset}",
            f"data.limit={args.train_limit}",
            f"run.seed={seed}",
            f"run.threads={args.threads}",
            "run.progress=false",
        ]
        run_stage(path, recipe, overrides, train_image, log=lambda s: None)
    return json.loads((path / "result.json").read_text())


def cnn_fmnist(args) -> list[dict]:
    """DARTS CNN space on an image set (Fashion-MNIST by default): one row per variant/seed."""
    rows = []
    for seed in range(args.seeds):
        for variant in args.variants:
            search_path = Path(args.out) / "cnn" / f"{variant}-s{seed}"
            row = {"task": "cnn_fmnist", "variant": variant, "seed": seed}
            row.update(cnn_search(args, search_path, seed, variant))
            result = cnn_train(
                args, Path(args.out) / "cnn" / f"{variant}-s{seed}-train", search_path, seed
            )
            row.update(final_acc=result["test_acc"], genotype=result["genotype"])
            print(
                f"  {variant} seed {seed}: acc {row['final_acc']:.2f} "
                f"search {row['search_s']:.0f}s edge-epochs {row['edge_epochs']}",
                flush=True,
            )
            rows.append(row)
    return rows


# Task name -> rows; PTB (darts_rnn) and forecasting join here when their cells can grow.
TASKS = {"cnn_fmnist": cnn_fmnist}


def summarise(rows: list[dict], tolerance: float) -> list[str]:
    """The table (mean +- std over seeds per task and variant) and one verdict per task."""
    lines = [
        f"{'task':12s} {'variant':16s} {'final acc %':>15s} {'search s':>9s} {'edge-epochs':>12s}"
    ]
    verdicts = []
    for task in dict.fromkeys(r["task"] for r in rows):
        means = {}
        for variant in dict.fromkeys(r["variant"] for r in rows if r["task"] == task):
            rs = [r for r in rows if r["task"] == task and r["variant"] == variant]
            accs = [r["final_acc"] for r in rs]
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            m = {
                "acc": statistics.mean(accs),
                "s": statistics.mean(r["search_s"] for r in rs),
                "ee": statistics.mean(r["edge_epochs"] for r in rs),
            }
            means[variant] = m
            lines.append(
                f"{task:12s} {variant:16s} {m['acc']:>7.2f} +- {std:<5.2f} {m['s']:>9.0f} "
                f"{m['ee']:>12.0f}"
            )
        if "fixed" not in means:
            continue
        f = means["fixed"]
        for variant, m in means.items():
            if variant == "fixed":
                continue
            cheaper = m["ee"] < f["ee"] and m["s"] < f["s"]
            comparable = m["acc"] >= f["acc"] - tolerance
            holds = "holds" if cheaper and comparable else "does not hold"
            verdicts.append(
                f"{task} {variant}: {m['ee'] / f['ee']:.0%} of the edge-epochs, "
                f"{m['s'] / f['s']:.0%} of the search time, accuracy {m['acc'] - f['acc']:+.2f} "
                f"points vs fixed -> the claim {holds}"
                f" here (comparable = within {tolerance} points)"
            )
    return lines + [""] + verdicts


def main() -> None:
    """Run every task's stages and print the table and the verdicts."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", default="cnn_fmnist", help=f"comma-separated: {', '.join(TASKS)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--limit", type=int, default=4000, help="search images (split 50/50)")
    p.add_argument("--epochs", type=int, default=8, help="search epochs")
    p.add_argument("--start-nodes", type=int, default=1)
    p.add_argument("--max-nodes", type=int, default=4)
    p.add_argument("--trigger", default="every", choices=("every", "plateau"))
    p.add_argument("--grow-every", type=int, default=2)
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--threshold", type=float, default=0.01)
    p.add_argument("--train-C", type=int, default=8)
    p.add_argument("--train-layers", type=int, default=5)
    p.add_argument("--train-epochs", type=int, default=5)
    p.add_argument("--train-limit", type=int, default=4000)
    p.add_argument("--tolerance", type=float, default=1.0, help="accuracy points")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--set", action="append", default=[], help="extra search override")
    p.add_argument("--out", default="runs/bench-growing")
    args = p.parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for task in args.tasks.split(","):
        if task not in TASKS:
            p.error(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        print(f"task {task}", flush=True)
        rows += TASKS[task](args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=1))
    print()
    print(
        f"search: DARTS 1st order, C={args.C} L={args.layers}, {args.limit} images, "
        f"{args.epochs} epochs, nodes {args.start_nodes}->{args.max_nodes} ({args.trigger}); "
        f"final training: C={args.train_C} L={args.train_layers}, {args.train_epochs} epochs, "
        f"{args.train_limit} images; {args.seeds} seed(s), {torch.get_num_threads()} threads"
    )
    print("\n".join(summarise(rows, args.tolerance)))
    for r in rows:
        print(f"{r['task']} {r['variant']} s{r['seed']} nodes/epoch {r['nodes']}: {r['genotype']}")


if __name__ == "__main__":
    main()
