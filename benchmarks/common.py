"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
from pathlib import Path

from diffnas.runs.config import load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import run_search


def run_stage(path: Path, config: str | None, overrides: list[str], fn, **kw):
    """`fn(cfg, run, resume=...)` in run directory `path`: resumed when it has a checkpoint,
    started from `config` + `overrides` (plus `run.out=path`) otherwise."""
    run = RunDir(path)
    if (path / "checkpoint.pt").exists() or (path / "checkpoint.prev.pt").exists():
        return fn(run.read_config(), run, resume=True, **kw)
    cfg = load_config(config, [*overrides, f"run.out={path}"])
    return fn(cfg, run.create(cfg), **kw)


def nb201_search(path: Path, args, seed: int, overrides: list[str]) -> dict:
    """A first-order DARTS search on NB201 / Fashion-MNIST at the size in `args` (C, N, limit,
    epochs, threads, set), reused when finished and resumed when interrupted; its last epoch
    record plus `wall_s`, the sum of its epoch times. `nb201_selection.py` and `prime.py` share
    these runs when they share `--out`."""
    if not (path / "genotype.json").exists():
        base = [
            "space.name=nb201",
            f"space.C={args.C}",
            f"space.N={args.N}",
            "data.dataset=fashion_mnist",
            f"data.limit={args.limit}",
            f"search.epochs={args.epochs}",
            f"run.seed={seed}",
            f"run.threads={args.threads}",
            "run.progress=false",
        ]
        run_stage(path, None, [*base, *args.set, *overrides], run_search, log=lambda s: None)
        print(f"  {path.name}: search done", flush=True)
    epochs = [r for r in RunDir(path).read_metrics() if r["kind"] == "epoch"]
    return {**epochs[-1], "wall_s": sum(r["epoch_time_s"] for r in epochs)}


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value)."""
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0
