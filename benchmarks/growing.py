"""Growing DARTS vs a fixed-size search at the maximum size: quality, search time, edge-epochs.

    python benchmarks/growing.py [--tasks cnn_fmnist,rnn_ptb,pair_ptb,rnn_forecast,pair_forecast]
        [--seeds 1] [--trigger every] [--grow-every 2] [--threads 0] [--out runs/bench-growing]
        [cnn: --epochs 8 --C 8 --layers 5 --limit 4000 --start-nodes 1 --max-nodes 4
              --train-epochs 5 ...]
        [recurrent: --rnn-epochs 8 --rnn-start-nodes 2 --rnn-max-nodes 8 --lm-nhid 64
              --lm-tokens 40000 --lm-train-nhid 200 --fc-lookback 48 --fc-horizon 6 ...]

Tasks (`TASKS`): the DARTS CNN cell on Fashion-MNIST (`cnn_fmnist`), the DARTS RNN cell and the
two-input backbone on PTB (`rnn_ptb`, `pair_ptb`: small scale, --lm-* sizes) and on the
exchange-rate set under the LSTNet protocol (`rnn_forecast`, `pair_forecast`: --fc-* sizes,
a shorter window than LSTNet's 168 to fit a CPU). For every task and seed, three first-order
DARTS searches with the same epochs:
- `fixed`: the usual search at the maximum size (--max-nodes / --rnn-max-nodes);
- `grow_then_prune`: `search.grower=morphism` from the start size up to the maximum
  (`--trigger every` every `--grow-every` epochs, or `plateau`), one derivation at the end;
- `grow_and_prune`: the same growth, the older nodes pruned after each growth (CNN: to their
  2 derived edges; DARTS RNN: to 1 edge; two-input: to 1 op, its inputs being fixed).
The genotype each search derives is then trained from scratch with the task's recipe and
budget (train_darts.toml, train_lm.toml, train_forecast.toml). Quality: CNN the accuracy on
the test split (`diffnas train` on images has no separate validation split), PTB the best
validation perplexity, forecasting the best validation RSE (the test split is not read).

Columns: quality of the derived cell after final training, search wall time (the sum of the
epoch times), edge-epochs, the sum over search epochs of the edges that ran (alpha rows with a
non-zero weight, per cell type, not per cell; a two-input node is one edge), and op-epochs, the
same for (edge, op) pairs left unmasked. The claim under test (docs/METHODS.md section 5): growing
makes the search cheaper at comparable quality; the verdict line says whether these numbers
show it (accuracy within --tolerance points of fixed; perplexity / RSE at most --rel-tolerance
worse).

Every stage reuses a finished run directory under --out and resumes an interrupted one.
`--step-time` times instead one search step of each recurrent task's supernet per size and
prints what each variant's node schedule (read from its finished search under --out) costs at
those rates: search time free of whatever else shared the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from common import mean_std, run_stage

from diffnas.data import cycle_batches
from diffnas.runs.config import load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import build_search, run_search
from diffnas.spaces.genotypes import load_genotype
from diffnas.train import train_image
from diffnas.train.forecast import train_forecast
from diffnas.train.lm import train_lm

REPO = Path(__file__).resolve().parents[1]


def growth_overrides(args, mode: str, start: int, most: int) -> list[str]:
    """The [search]/[space] keys of a growing search in `mode`, from `start` to `most` nodes."""
    return [
        f"space.steps={start}",
        f"space.multiplier={start}",
        "search.grower=morphism",
        f"search.grow_max_nodes={most}",
        f"search.grow_trigger={args.trigger}",
        f"search.grow_every={args.grow_every}",
        f"search.grow_patience={args.patience}",
        f"search.grow_threshold={args.threshold}",
        f"search.grow_mode={mode}",
    ]


# Variant name -> its search overrides (on top of the task's base search), given the task's
# start and maximum sizes.
VARIANTS = {
    "fixed": lambda a, start, most: [f"space.steps={most}", f"space.multiplier={most}"],
    "grow_then_prune": lambda a, start, most: growth_overrides(a, "grow_then_prune", start, most),
    "grow_and_prune": lambda a, start, most: growth_overrides(a, "grow_and_prune", start, most),
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


def search_summary(path: Path, most: int) -> dict:
    """Wall time (the sum of the epoch times), edge-epochs and nodes per epoch of a search."""
    epochs = [r for r in RunDir(path).read_metrics() if r["kind"] == "epoch"]
    return {
        "search_s": sum(r["epoch_time_s"] for r in epochs),
        "edge_epochs": edge_epochs(path),
        "op_epochs": sum(sum(r["active_ops"].values()) for r in epochs),
        "nodes": [r.get("nodes", most) for r in epochs],
    }


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
        sizes = VARIANTS[variant](args, args.start_nodes, args.max_nodes)
        run_stage(path, None, [*base, *sizes, *args.set], run_search, log=lambda s: None)
    return search_summary(path, args.max_nodes)


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
    return json.loads((path / "result.json").read_text())["test_acc"]


# ----------------------------------------------------------------------------- recurrent tasks


def recurrent_search(search_base: Callable):
    """The search stage of a recurrent task: its base (config, overrides) from
    `search_base(args, seed)` plus the variant's sizes, reused when finished."""

    def search(args, path: Path, seed: int, variant: str) -> dict:
        if not (path / "genotype.json").exists():
            config, base = search_base(args, seed)
            sizes = VARIANTS[variant](args, args.rnn_start_nodes, args.rnn_max_nodes)
            run_stage(path, config, [*base, *sizes, *args.set], run_search, log=lambda s: None)
        return search_summary(path, args.rnn_max_nodes)

    return search


def lm_stages(space: str):
    """PTB language modelling with the `space` cell (darts_rnn or pair_rnn): the search
    (configs/<space>_ptb.toml at --lm-nhid units on the first --lm-tokens training tokens) and
    the final training (train_lm.toml at --lm-train-nhid units, --lm-train-epochs on
    --lm-train-tokens tokens, the budget of benchmarks/ptb.py); quality:
    the best validation perplexity (first --lm-valid-tokens valid tokens)."""

    def search_base(args, seed: int) -> tuple[str, list[str]]:
        overrides = [
            f"lm.emsize={args.lm_nhid}",
            f"lm.nhid={args.lm_nhid}",
            f"data.batch_size={args.lm_batch}",
            f"data.limit={args.lm_tokens}",
            f"lm.valid_limit={args.lm_valid_tokens}",
            f"search.epochs={args.rnn_epochs}",
            f"run.seed={seed}",
            f"run.threads={args.threads}",
            "run.progress=false",
        ]
        return str(REPO / "configs" / f"{space}_ptb.toml"), overrides

    def train(args, path: Path, genotype: Path, seed: int) -> float:
        if not (path / "result.json").exists():
            overrides = [
                f"lm.core={space}",
                f"train.genotype={genotype}",
                f"lm.emsize={args.lm_train_nhid}",
                f"lm.nhid={args.lm_train_nhid}",
                f"train.epochs={args.lm_train_epochs}",
                f"data.limit={args.lm_train_tokens}",
                f"lm.valid_limit={args.lm_valid_tokens}",
                f"run.seed={seed}",
                f"run.threads={args.threads}",
                "run.progress=false",
            ]
            recipe = str(resources.files("diffnas") / "configs" / "train_lm.toml")
            run_stage(path, recipe, overrides, train_lm, log=lambda s: None)
        return json.loads((path / "result.json").read_text())["valid_ppl"]

    return recurrent_search(search_base), train, search_base


def forecast_stages(space: str):
    """Exchange-rate forecasting (LSTNet protocol, --fc-lookback window, horizon --fc-horizon)
    with the `space` cell: the search (configs/darts_rnn_forecast.toml with space.name =
    `space`, --fc-hidden units, --fc-windows training windows per epoch) and the final
    training (train_forecast.toml, --fc-train-epochs); quality: the best validation RSE."""
    data = [
        f"forecast.path={Path(REPO.parent, 'shared', 'data', 'lstnet', 'exchange_rate.txt.gz')}",
        "forecast.format=lstnet",
        "forecast.protocol=lstnet",
    ]

    def common(args, seed: int) -> list[str]:
        return [
            *data,
            f"forecast.lookback={args.fc_lookback}",
            f"forecast.horizon={args.fc_horizon}",
            f"forecast.hidden={args.fc_hidden}",
            f"forecast.highway={args.fc_highway}",
            f"run.seed={seed}",
            f"run.threads={args.threads}",
            "run.progress=false",
        ]

    def search_base(args, seed: int) -> tuple[str, list[str]]:
        overrides = [
            *common(args, seed),
            f"forecast.train_windows={args.fc_windows}",
            f"space.name={space}",
            f"search.epochs={args.rnn_epochs}",
        ]
        return str(REPO / "configs" / "darts_rnn_forecast.toml"), overrides

    def train(args, path: Path, genotype: Path, seed: int) -> float:
        if not (path / "result.json").exists():
            overrides = [
                *common(args, seed),
                f"forecast.model={space}",
                f"train.genotype={genotype}",
                f"train.epochs={args.fc_train_epochs}",
                f"forecast.train_windows={args.fc_train_windows}",
            ]
            recipe = str(resources.files("diffnas") / "configs" / "train_forecast.toml")
            run_stage(path, recipe, overrides, train_forecast, log=lambda s: None)
        return json.loads((path / "result.json").read_text())["val_rse"]

    return recurrent_search(search_base), train, search_base


@dataclass
class Task:
    """One benchmark task: its search and final-training stages and its quality metric."""

    # (search(args, path, seed, variant) -> dict, train(...) -> quality[, search_base(args,
    # seed) -> (config, overrides): the recurrent tasks', for --step-time])
    stages: tuple
    metric: str
    higher_is_better: bool
    sizes: Callable  # args -> text describing the budgets


def cnn_sizes(a) -> str:
    return (
        f"DARTS CNN, C={a.C} L={a.layers}, {a.limit} {a.dataset} images, {a.epochs} epochs, "
        f"nodes {a.start_nodes}->{a.max_nodes}; final: C={a.train_C} L={a.train_layers}, "
        f"{a.train_epochs} epochs on {a.train_limit} images"
    )


def lm_sizes(a) -> str:
    return (
        f"PTB, {a.lm_nhid} units, search {a.rnn_epochs} epochs on {a.lm_tokens} tokens (batch "
        f"{a.lm_batch}), nodes {a.rnn_start_nodes}->{a.rnn_max_nodes}; final: "
        f"{a.lm_train_nhid} units, {a.lm_train_epochs} epochs on {a.lm_train_tokens} tokens, "
        f"valid on {a.lm_valid_tokens or 'all'} tokens"
    )


def fc_sizes(a) -> str:
    return (
        f"exchange-rate LSTNet protocol, window {a.fc_lookback}, h={a.fc_horizon}, highway "
        f"{a.fc_highway or 'off'}, "
        f"{a.fc_hidden} units, search {a.rnn_epochs} epochs of {a.fc_windows} windows, nodes "
        f"{a.rnn_start_nodes}->{a.rnn_max_nodes}; final: {a.fc_train_epochs} epochs of "
        f"{a.fc_train_windows or 'all'} windows (train_forecast.toml: Adam 1e-3, L1)"
    )


TASKS = {
    "cnn_fmnist": Task((cnn_search, cnn_train), "test acc %", True, cnn_sizes),
    "rnn_ptb": Task(lm_stages("darts_rnn"), "valid ppl", False, lm_sizes),
    "pair_ptb": Task(lm_stages("pair_rnn"), "valid ppl", False, lm_sizes),
    "rnn_forecast": Task(forecast_stages("darts_rnn"), "valid RSE", False, fc_sizes),
    "pair_forecast": Task(forecast_stages("pair_rnn"), "valid RSE", False, fc_sizes),
}


def run_task(args, name: str) -> list[dict]:
    """Every variant and seed of task `name`: search, then final training of its genotype."""
    search, train = TASKS[name].stages[:2]
    rows = []
    for seed in range(args.seeds):
        for variant in args.variants:
            path = Path(args.out) / name / f"{variant}-s{seed}"
            row = {
                "task": name,
                "variant": variant,
                "seed": seed,
                **search(args, path, seed, variant),
            }
            row["quality"] = train(args, Path(f"{path}-train"), path, seed)
            row["genotype"] = str(load_genotype(str(path)))
            print(
                f"  {variant} seed {seed}: {TASKS[name].metric} {row['quality']:.4g} "
                f"search {row['search_s']:.0f}s edge-epochs {row['edge_epochs']}",
                flush=True,
            )
            rows.append(row)
    return rows


def step_times(args, tasks: list[str]) -> None:
    """Seconds per search step (alpha step + weight step) of each recurrent task's supernet at
    every size from --rnn-start-nodes to --rnn-max-nodes, on the task's data and sizes (median
    of --repeats steps after one warm-up), and the search time each variant's node schedule
    costs at those rates (weight steps only, no validation): the search cost on a quiet
    machine, which `search s` (wall time, shared with whatever else ran) is not."""
    for task in tasks:
        if len(TASKS[task].stages) < 3:
            print(f"{task}: --step-time measures the recurrent tasks only")
            continue
        config, base = TASKS[task].stages[2](args, 0)
        per_step, steps_per_epoch = {}, 0
        for n in range(args.rnn_start_nodes, args.rnn_max_nodes + 1):
            setup = build_search(load_config(config, [*base, f"space.steps={n}", *args.set]))
            strategy, steps_per_epoch = setup.strategy, len(setup.train)
            strategy.on_epoch_start(0)
            train = setup.batches(cycle_batches(setup.train, 0))
            val = setup.batches(cycle_batches(setup.val, 0))
            times = []
            for _ in range(args.repeats + 1):
                batch, val_batch = next(train), next(val)
                t0 = time.perf_counter()
                strategy.step(batch, val_batch)
                times.append(time.perf_counter() - t0)
            per_step[n] = statistics.median(times[1:])
        sizes = "  ".join(f"{n}: {t:.3f}" for n, t in per_step.items())
        print(f"{task}: s/step by nodes ({torch.get_num_threads()} threads)  {sizes}")
        for variant in args.variants:
            path = Path(args.out) / task / f"{variant}-s0"
            if not (path / "genotype.json").exists():
                continue
            nodes = search_summary(path, args.rnn_max_nodes)["nodes"]
            est = sum(steps_per_epoch * per_step[n] for n in nodes)
            bound = " (at most: its pruned edges do not run)" if variant == "grow_and_prune" else ""
            print(f"  {variant:16s} nodes/epoch {nodes}: {est:.0f} s of steps{bound}")


def summarise(rows: list[dict], tolerance: float, rel_tolerance: float) -> list[str]:
    """The table (mean +- std over seeds per task and variant) and one verdict per task.
    Comparable quality: accuracy within `tolerance` points of fixed; perplexity and RSE at
    most `rel_tolerance` (relative) above fixed."""
    lines = [
        f"{'task':14s} {'variant':16s} {'metric':>10s} {'value':>17s} {'search s':>9s} "
        f"{'edge-epochs':>12s} {'op-epochs':>10s}"
    ]
    verdicts = []
    for task in dict.fromkeys(r["task"] for r in rows):
        spec, means = TASKS[task], {}
        for variant in dict.fromkeys(r["variant"] for r in rows if r["task"] == task):
            rs = [r for r in rows if r["task"] == task and r["variant"] == variant]
            q, std = mean_std([r["quality"] for r in rs])
            m = {
                "q": q,
                "s": statistics.mean(r["search_s"] for r in rs),
                "ee": statistics.mean(r["edge_epochs"] for r in rs),
                "oe": statistics.mean(r["op_epochs"] for r in rs),
            }
            means[variant] = m
            lines.append(
                f"{task:14s} {variant:16s} {spec.metric:>10s} {q:>8.4g} +- {std:<6.3g} "
                f"{m['s']:>9.0f} {m['ee']:>12.0f} {m['oe']:>10.0f}"
            )
        if "fixed" not in means:
            continue
        f = means["fixed"]
        for variant, m in means.items():
            if variant == "fixed":
                continue
            cheaper = m["ee"] < f["ee"] and m["s"] < f["s"]
            if spec.higher_is_better:
                comparable = m["q"] >= f["q"] - tolerance
                delta, rule = f"{m['q'] - f['q']:+.2f} points", f"within {tolerance} points"
            else:
                comparable = m["q"] <= f["q"] * (1 + rel_tolerance)
                delta, rule = f"{m['q'] / f['q'] - 1:+.1%}", f"at most {rel_tolerance:.0%} worse"
            holds = "holds" if cheaper and comparable else "does not hold"
            verdicts.append(
                f"{task} {variant}: {m['ee'] / f['ee']:.0%} of the edge-epochs, "
                f"{m['s'] / f['s']:.0%} of the search time, {spec.metric} {delta} vs fixed -> "
                f"the claim {holds} here (comparable = {rule})"
            )
    return lines + [""] + verdicts


def main() -> None:
    """Run every task's stages and print the table and the verdicts."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", default="cnn_fmnist", help=f"comma-separated: {', '.join(TASKS)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--trigger", default="every", choices=("every", "plateau"))
    p.add_argument("--grow-every", type=int, default=2)
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--threshold", type=float, default=0.01)
    g = p.add_argument_group("cnn_fmnist")
    g.add_argument("--dataset", default="fashion_mnist")
    g.add_argument("--C", type=int, default=8)
    g.add_argument("--layers", type=int, default=5)
    g.add_argument("--limit", type=int, default=4000, help="search images (split 50/50)")
    g.add_argument("--epochs", type=int, default=8, help="search epochs")
    g.add_argument("--start-nodes", type=int, default=1)
    g.add_argument("--max-nodes", type=int, default=4)
    g.add_argument("--train-C", type=int, default=8)
    g.add_argument("--train-layers", type=int, default=5)
    g.add_argument("--train-epochs", type=int, default=5)
    g.add_argument("--train-limit", type=int, default=4000)
    g = p.add_argument_group("recurrent tasks (rnn_*, pair_*)")
    g.add_argument("--rnn-epochs", type=int, default=8, help="search epochs")
    g.add_argument("--rnn-start-nodes", type=int, default=2)
    g.add_argument("--rnn-max-nodes", type=int, default=8)
    g.add_argument("--lm-nhid", type=int, default=64)
    g.add_argument("--lm-batch", type=int, default=32)
    g.add_argument("--lm-tokens", type=int, default=40000, help="search training tokens")
    g.add_argument("--lm-valid-tokens", type=int, default=10000, help="0: all 73,760")
    g.add_argument("--lm-train-nhid", type=int, default=200, help="units of the final LM")
    g.add_argument("--lm-train-epochs", type=int, default=3)
    g.add_argument("--lm-train-tokens", type=int, default=200000)
    g.add_argument("--fc-lookback", type=int, default=48)
    g.add_argument("--fc-horizon", type=int, default=6)
    g.add_argument("--fc-hidden", type=int, default=32)
    g.add_argument(
        "--fc-highway", type=int, default=0, help="LSTNet's autoregressive highway (0: off)"
    )
    g.add_argument("--fc-windows", type=int, default=512, help="search windows per epoch")
    g.add_argument("--fc-train-epochs", type=int, default=20)
    g.add_argument("--fc-train-windows", type=int, default=0, help="final: per epoch; 0 all")
    p.add_argument("--tolerance", type=float, default=1.0, help="accuracy points")
    p.add_argument("--rel-tolerance", type=float, default=0.05, help="perplexity / RSE")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--set", action="append", default=[], help="extra search override")
    p.add_argument("--out", default="runs/bench-growing")
    p.add_argument("--step-time", action="store_true", help="time search steps per size, exit")
    p.add_argument("--repeats", type=int, default=5, help="--step-time: steps per size")
    args = p.parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    tasks = [t for t in args.tasks.split(",") if t]
    for task in tasks:
        if task not in TASKS:
            p.error(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.step_time:
        step_times(args, tasks)
        return
    rows = []
    for task in tasks:
        print(f"task {task}", flush=True)
        rows += run_task(args, task)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=1))
    print()
    for task in tasks:
        print(f"{task}: {TASKS[task].sizes(args)}")
    print(
        f"growth: trigger {args.trigger} (every {args.grow_every} / patience {args.patience}), "
        f"first-order DARTS; {args.seeds} seed(s), {torch.get_num_threads()} threads"
    )
    print("\n".join(summarise(rows, args.tolerance, args.rel_tolerance)))
    for r in rows:
        print(f"{r['task']} {r['variant']} s{r['seed']} nodes/epoch {r['nodes']}: {r['genotype']}")


if __name__ == "__main__":
    main()
