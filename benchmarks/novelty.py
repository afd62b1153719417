"""EN²AS on NB201 / Fashion-MNIST: novelty vs random single-path sampling vs DARTS, scored by the
ground truth of the selected cells and by how well each supernet ranks a fixed set of cells.

    python benchmarks/novelty.py [--seeds 0-2] [--epochs 10] [--C 8] [--N 1] [--limit 6000]
        [--variants novelty,random] [--archive 100] [--es-lr 0.01] [--sample-n 1000]
        [--top-k 10] [--tau-cells 100] [--tau-seed 0] [--tau-images 0] [--time-steps 10]
        [--paper-steps 0] [--device cpu] [--threads 0] [--set KEY=VALUE ...]
        [--out runs/bench-nb201] [--no-table]

Stages per seed under --out, each reused when finished and resumed when interrupted:
1. `<variant>-s<seed>`: a single-path supernet search at the size of `nb201_selection.py` (the
   first --limit Fashion-MNIST training images split 50/50, --epochs epochs, C, N), with
   `search.strategy` `novelty` (EN²AS; archive --archive, eta --es-lr, the spec's other
   defaults), `random_path` (uniform, SPOS-style) or, as variant `novelty_pr`, EN²AS-PR;
2. `<variant>-s<seed>/select-sample_rank`: `diffnas select --method sample_rank` (--sample-n
   candidates, the --top-k best rescored on the whole val split);
3. `tau/<supernet>-s<seed>.json`: the inherited-weight val accuracy of --tau-cells fixed NB201
   cells (seeded by --tau-seed, the same for every supernet) and Kendall's tau-b against their
   AnalogNAS-Bench CIFAR-10 accuracy; for the single-path supernets and, when
   `nb201_selection.py` has run in the same --out, the DARTS and fix-alpha supernets.
The DARTS rows (magnitude, DARTS-PT, DARTS-PT on the fix-alpha supernet) are read from
`darts-s<seed>/` and `fixalpha-s<seed>/` of `nb201_selection.py`; this script never runs them.
Also timed (cached in `novelty-step-times.json`): a single-path step against a full-supernet
weight step (every op on, uniform weights) at the benchmark size and at the DARTS paper size
(C=16, 8 cells, batch 64 of 3x32x32, with --paper-steps N > 0), on --device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from common import mean_std, nb201_search

from diffnas.arch import ArchParameters
from diffnas.bench import get_table
from diffnas.bench.ranking import kendall_tau
from diffnas.runs.config import SearchConfig, SpaceConfig
from diffnas.runs.rundir import RunDir
from diffnas.runs.sweep import parse_seeds
from diffnas.search import STRATEGIES
from diffnas.search.loop import build_search
from diffnas.search.single_path import NB201Codec
from diffnas.select import open_select_dir, run_select
from diffnas.select.perturbation import score
from diffnas.select.run import load_supernet_state
from diffnas.spaces import build_supernet
from diffnas.spaces.genotypes import NB201_OPS, NB201Genotype

# variant -> (row name, search overrides); the novelty knobs are added from the flags
VARIANTS = {
    "novelty": ("EN²AS (novelty)", ["search.strategy=novelty"]),
    "random": ("random path", ["search.strategy=random_path"]),
    "novelty_pr": (
        "EN²AS-PR (novelty+reward)",
        ["search.strategy=novelty", "search.novelty_reward_weight=0.5"],
    ),
}
# (row name, supernet directory prefix, selection method) of nb201_selection.py
DARTS_ROWS = (
    ("DARTS (magnitude)", "darts", "magnitude"),
    ("DARTS+PT", "darts", "perturbation"),
    ("DARTS+PT (fix alpha)", "fixalpha", "perturbation"),
)


def is_finished_search(path: Path) -> bool:
    """Whether `path` holds a finished search (its genotype.json is written at the end)."""
    return (path / "genotype.json").exists() and (path / "checkpoint.pt").exists()


def sample_rank(search_dir: Path, args) -> dict:
    """The sample_rank selection's result.json (run, resumed or reused as needed)."""
    out = search_dir / "select-sample_rank"
    if not (out / "result.json").exists():
        resume = (out / "checkpoint.pt").exists() or (out / "checkpoint.prev.pt").exists()
        overrides = [
            f"select.sample_n={args.sample_n}",
            f"select.sample_top_k={args.top_k}",
            "run.progress=false",
        ]
        cfg, run = open_select_dir(search_dir, "sample_rank", [] if resume else overrides,
                                   resume=resume)  # fmt: skip
        run_select(cfg, search_dir, run, resume=resume, log=lambda s: None)
        print(f"  {search_dir.name}: sample_rank selection done", flush=True)
    return json.loads((out / "result.json").read_text())


def tau_cells(n: int, seed: int) -> list[NB201Genotype]:
    """`n` distinct NB201 cells, uniformly random with `seed` (the same for every supernet)."""
    gen = torch.Generator().manual_seed(seed)
    cells, seen = [], set()
    while len(cells) < n:
        ops = tuple(NB201_OPS[i] for i in torch.randint(len(NB201_OPS), (6,), generator=gen))
        if ops not in seen:
            seen.add(ops)
            cells.append(NB201Genotype(ops))
    return cells


def supernet_tau(search_dir: Path, out: Path, args) -> dict:
    """Inherited-weight val accuracy of the fixed cells on the finished supernet in
    `search_dir` vs their table accuracy: Kendall tau-b; cached in `out`."""
    if out.exists():
        return json.loads(out.read_text())
    t0 = time.perf_counter()
    cfg = RunDir(search_dir).read_config()
    cfg.run.threads = args.threads
    setup = build_search(cfg)
    state = load_supernet_state(search_dir, cfg)
    model = setup.strategy.model
    model.load_state_dict(state["model"])
    codec = NB201Codec(model)
    like = {k: a.detach() for k, a in setup.strategy.arch.alphas().items()}
    val, n = [], 0
    for x, y in setup.batches(setup.val_eval.epoch(0), shard=False):
        if args.tau_images and n >= args.tau_images:
            break
        val.append((x, y))
        n += len(y)
    table = get_table()
    cells = tau_cells(args.tau_cells, args.tau_seed)
    inherited = [score(model, codec.weights(codec.encode(c), like), val, "train")[0] for c in cells]
    truth = [table.accuracy(c) for c in cells]
    result = {
        "tau": kendall_tau(inherited, truth),
        "cells": [c.to_string() for c in cells],
        "inherited_acc": inherited,
        "table_acc": truth,
        "val_images": n,
        "time_s": time.perf_counter() - t0,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out)
    print(f"  {search_dir.name}: Kendall tau {result['tau']:.3f}", flush=True)
    return result


def time_steps(space: dict, in_shape: tuple[int, int, int], steps: int, device="cpu") -> dict:
    """Median seconds of a single-path step (a fresh uniform path each step) and of a
    full-supernet weight step (every op on, uniform weights: DARTS with frozen alphas)."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out = {}
    for name, strategy, extra in (
        ("full_s", "darts", {"fix_alpha": True}),
        ("single_path_s", "random_path", {}),
    ):
        torch.manual_seed(0)
        model = build_supernet(SpaceConfig(**space), in_shape[0], 10).to(dev)
        model = model.to(memory_format=torch.channels_last)
        arch = ArchParameters(model.arch_shapes(), init_std=0.0).to(dev)
        search = STRATEGIES.get(strategy)(model, arch, SearchConfig(strategy=strategy, **extra))
        x = torch.randn(64, *in_shape, device=dev)
        y = torch.randint(0, 10, (64,), device=dev)
        search.step((x, y), None)  # warm-up
        times = []
        for _ in range(steps):
            sync()
            t = time.perf_counter()
            search.step((x, y), None)
            sync()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    out["ratio"] = out["single_path_s"] / out["full_s"]
    return out


def step_times(args) -> dict:
    """The step timings at the benchmark and the paper size (cached under --out)."""
    path = Path(args.out) / "novelty-step-times.json"
    if path.exists():
        return json.loads(path.read_text())
    res = {
        "benchmark": {
            "size": f"NB201 C={args.C} N={args.N}, batch 64 of 1x28x28",
            **time_steps(
                dict(name="nb201", C=args.C, N=args.N), (1, 28, 28), args.time_steps, args.device
            ),
        }
    }
    if args.paper_steps:
        res["paper"] = {
            "size": "DARTS C=16, 8 cells, batch 64 of 3x32x32",
            **time_steps(
                dict(name="darts", C=16, layers=8), (3, 32, 32), args.paper_steps, args.device
            ),
        }
    res["threads"] = torch.get_num_threads()
    res["device"] = args.device
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    return res


def seed_rows(args, seed: int) -> dict[str, dict]:
    """Every stage of one seed; per row: genotype, tau, distinct archs, times (None: missing)."""
    out = Path(args.out)
    rows: dict[str, dict | None] = {}
    novelty_knobs = [f"search.novelty_archive={args.archive}", f"search.novelty_es_lr={args.es_lr}"]
    for variant in args.variants:
        row, overrides = VARIANTS[variant]
        path = out / f"{variant}-s{seed}"
        knobs = novelty_knobs if "novelty" in variant else []
        last = nb201_search(path, args, seed, [*overrides, *knobs])
        sel = sample_rank(path, args)
        tau = supernet_tau(path, out / "tau" / f"{path.name}.json", args)
        rows[row] = {
            "genotype": sel["genotype"],
            "tau": tau["tau"],
            "distinct": last.get("distinct_archs"),
            "novelty": last.get("mean_novelty"),
            "search_s": last["wall_s"],
            "select_s": sel["select_time_s"],
        }
    for row, prefix, method in DARTS_ROWS:
        path = out / f"{prefix}-s{seed}"
        result = path / f"select-{method}" / "result.json"
        if not (is_finished_search(path) and result.exists()):
            rows[row] = None
            continue
        r = json.loads(result.read_text())
        epochs = [m for m in RunDir(path).read_metrics() if m["kind"] == "epoch"]
        tau = supernet_tau(path, out / "tau" / f"{path.name}.json", args)
        rows[row] = {
            "genotype": r["genotype"],
            "tau": tau["tau"],
            "distinct": None,
            "novelty": None,
            "search_s": sum(m["epoch_time_s"] for m in epochs),
            "select_s": r.get("decision_time_s", r.get("select_time_s", 0.0))
            + r.get("tune_time_s", 0.0),
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
    p.add_argument("--variants", default="novelty,random", help=f"of {', '.join(VARIANTS)}")
    p.add_argument(
        "--archive",
        type=int,
        default=100,
        help="novelty archive size = warm-up steps (the spec's 1000 exceeds this budget's "
        "~470 steps)",
    )
    p.add_argument("--es-lr", type=float, default=0.01, help="NS-ES step size eta")
    p.add_argument("--sample-n", type=int, default=1000, help="sample_rank candidates")
    p.add_argument("--top-k", type=int, default=10, help="sample_rank candidates rescored")
    p.add_argument("--tau-cells", type=int, default=100, help="fixed NB201 cells for Kendall tau")
    p.add_argument("--tau-seed", type=int, default=0)
    p.add_argument("--tau-images", type=int, default=0, help="val images for tau (0: all)")
    p.add_argument("--time-steps", type=int, default=10, help="timed steps, benchmark size")
    p.add_argument(
        "--paper-steps",
        type=int,
        default=0,
        help="timed steps at the DARTS paper size (0: skip; a full-supernet step takes 30-100 s "
        "on 2 CPU cores)",
    )
    p.add_argument("--device", default="cpu", help="device of the step timings (cpu, cuda)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="runs/bench-nb201", help="shared with nb201_selection.py")
    p.add_argument("--no-table", action="store_true", help="run the stages only")
    args = p.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    per_seed = {seed: seed_rows(args, seed) for seed in seeds}
    times = step_times(args)
    if args.no_table:
        return
    table = get_table()

    print()
    print(
        f"NB201 / Fashion-MNIST: supernet C={args.C} N={args.N}, {args.epochs} epochs on the "
        f"first {args.limit} training images (50/50 train/val), seeds {args.seeds}, "
        f"{torch.get_num_threads()} threads. acc = AnalogNAS-Bench CIFAR-10 accuracy of the "
        f"selected cell; tau = Kendall tau-b of inherited-weight val accuracy vs the table over "
        f"{args.tau_cells} fixed cells; novelty: archive {args.archive}, eta {args.es_lr}; "
        f"sample_rank {args.sample_n} candidates, top {args.top_k}"
    )
    print(
        f"{'method':26s} {'acc mean':>8s} {'std':>5s} {'tau mean':>8s} {'std':>5s} "
        f"{'distinct':>8s} {'novelty':>7s} {'search s':>8s} {'select s':>8s}  per-seed acc"
    )
    rows = [VARIANTS[v][0] for v in args.variants] + [r for r, _, _ in DARTS_ROWS]
    missing = []
    for row in rows:
        rs = [per_seed[s][row] for s in seeds]
        if any(r is None for r in rs):
            missing.append(row)
            continue
        accs = [table.accuracy(NB201Genotype.from_string(r["genotype"])) for r in rs]
        acc, acc_sd = mean_std(accs)
        tau, tau_sd = mean_std([r["tau"] for r in rs])
        distinct = (
            f"{statistics.mean(r['distinct'] for r in rs):8.0f}"
            if rs[0]["distinct"] is not None
            else f"{'-':>8s}"
        )
        nov = (
            f"{statistics.mean(r['novelty'] for r in rs):7.3f}"
            if rs[0]["novelty"] is not None
            else f"{'-':>7s}"
        )
        print(
            f"{row:26s} {acc:>8.2f} {acc_sd:>5.2f} {tau:>8.3f} {tau_sd:>5.3f} {distinct} {nov} "
            f"{statistics.mean(r['search_s'] for r in rs):>8.0f} "
            f"{statistics.mean(r['select_s'] for r in rs):>8.0f}  "
            + ", ".join(f"{a:.2f}" for a in accs)
        )
    best_arch, best_acc = table.best()
    print(f"table: best {best_acc:.2f} ({best_arch}), median {table.median_accuracy():.2f}")
    if missing:
        print(
            f"missing rows: {', '.join(missing)}: run `python benchmarks/nb201_selection.py "
            f"--seeds {args.seeds} --epochs {args.epochs} --C {args.C} --N {args.N} --limit "
            f"{args.limit} --out {args.out}` first (this script does not run DARTS)"
        )
    for key, t in times.items():
        if isinstance(t, dict):
            print(
                f"step time, {t['size']}: single path {t['single_path_s'] * 1000:.1f} ms, full "
                f"supernet {t['full_s'] * 1000:.1f} ms, ratio {t['ratio']:.3f} ({key})"
            )
    for seed in seeds:
        for row in rows:
            if per_seed[seed][row] is not None:
                print(f"seed {seed} {row}: {per_seed[seed][row]['genotype']}")


if __name__ == "__main__":
    main()
