"""Multi-seed sweeps: run one config with several seeds, then summarise them honestly.

`diffnas sweep --config FILE --seeds 0-3` runs `diffnas search` once per seed in
`<out>/seed-<s>` (several at once, each with its share of the CPU threads, or as tasks on an
existing Ray cluster with `--ray-address`), skips seeds that
finished, resumes seeds that were interrupted, and writes `<out>/summary.json`: mean and std of
every numeric final metric over the seeds, and for every edge of the genotype how many seeds
agree on it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from diffnas.runs.config import ConfigError
from diffnas.runs.rundir import CHECKPOINT_FILE, GENOTYPE_FILE, RunDir, file_in_the_way
from diffnas.spaces.genotypes import Genotype, NB201Genotype, load_genotype

SUMMARY_FILE = "summary.json"


def parse_seeds(text: str) -> list[int]:
    """'0-3' -> [0, 1, 2, 3]; '1,5,7' -> [1, 5, 7]; '0-2,9' -> [0, 1, 2, 9]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected e.g. 0-3 or 0,2,5") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds {text!r}: expected distinct seeds >= 0, e.g. 0-3")
    return seeds


def seed_dir(out: Path, seed: int) -> Path:
    """The run directory of one seed."""
    return out / f"seed-{seed}"


def seed_command(config: str | None, overrides: list[str], out: Path, seed: int, threads: int):
    """The `diffnas search` command line of one seed (a resume when it has a checkpoint)."""
    run = seed_dir(out, seed)
    base = [sys.executable, "-m", "diffnas", "search"]
    if (run / CHECKPOINT_FILE).exists():
        return [*base, "--resume", str(run)]
    cmd = [*base, "--out", str(run)]
    if config:
        cmd += ["--config", config]
    for s in [*overrides, f"run.seed={seed}", f"run.threads={threads}", "run.progress=false"]:
        cmd += ["--set", s]
    return cmd


def run_seed(cmd: list[str], log_path: str) -> int:
    """Run one seed's command, appending its output to `log_path`; its exit code."""
    with open(log_path, "a") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode


def run_sweep(
    config, overrides, seeds, out: Path, jobs: int, log=print, ray_address: str | None = None
) -> list[int]:
    """Run the unfinished seeds, `jobs` at a time on this machine or, with `ray_address`, as
    tasks on that Ray cluster; returns the seeds that failed."""
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise ConfigError(f"--out {out}: {blocker} is a file; pick another sweep directory")
    out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in seeds if not (seed_dir(out, s) / GENOTYPE_FILE).exists()]
    for s in sorted(set(seeds) - set(todo)):
        log(f"seed {s}: finished before, not run again")
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    cmds = {seed: seed_command(config, overrides, out, seed, threads) for seed in todo}
    for seed, cmd in cmds.items():
        log(f"seed {seed}: {'resuming' if '--resume' in cmd else 'starting'}")
    logs = {seed: str(out / f"seed-{seed}.log") for seed in todo}
    t0 = time.perf_counter()
    if ray_address:
        codes = _run_on_ray(cmds, logs, ray_address, threads)
    else:
        with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
            futures = {seed: pool.submit(run_seed, cmds[seed], logs[seed]) for seed in todo}
            codes = {seed: f.result() for seed, f in futures.items()}
    for seed, code in codes.items():
        status = "done" if code == 0 else f"FAILED (exit {code}; see seed-{seed}.log)"
        log(f"seed {seed}: {status} ({time.perf_counter() - t0:.0f}s since the sweep started)")
    return [s for s, c in codes.items() if c]


def _run_on_ray(cmds: dict, logs: dict, address: str, threads: int) -> dict[int, int]:
    """One Ray task per seed (`threads` CPUs each) on the cluster at `address`. The workers run
    the same command line, so they need diffnas installed at the same Python path and the
    sweep directory on a shared file system."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray-address needs the ray package (pip install ray); without it, drop "
            "--ray-address to run the seeds on this machine"
        ) from None
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(num_cpus=threads)(run_seed)
    refs = {seed: task.remote(cmd, logs[seed]) for seed, cmd in cmds.items()}
    return {seed: ray.get(ref) for seed, ref in refs.items()}


def _edges(genotype) -> dict[str, str]:
    """Edge -> choice: NB201 'edge i<-j' -> op; DARTS '<cell> node n input j' -> op."""
    if isinstance(genotype, NB201Genotype):
        return {f"{to}<-{j}": op for op, (j, to) in zip(genotype.ops, genotype.EDGES, strict=True)}
    if isinstance(genotype, Genotype):
        out = {}
        for kind in ("normal", "reduce"):
            for k, (op, j) in enumerate(getattr(genotype, kind)):
                out[f"{kind} {k // 2 + 2}<-{j}"] = op
        return out
    raise TypeError(f"cannot compare genotypes of type {type(genotype).__name__}")


def edge_agreement(genotypes: list) -> dict[str, dict]:
    """Per edge of any seed's genotype: the most common choice and how many seeds made it
    (a DARTS edge a seed did not keep counts as the choice '-')."""
    per_seed = [_edges(g) for g in genotypes]
    keys = sorted({k for e in per_seed for k in e})
    out = {}
    for k in keys:
        counts = Counter(e.get(k, "-") for e in per_seed)
        choice, n = counts.most_common(1)[0]
        out[k] = {"choice": choice, "agree": n, "of": len(per_seed)}
    return out


def _mean_std(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarize(run_dirs: list[Path]) -> dict:
    """Mean and std over the finished runs of every numeric value of their final epoch record,
    and the edge agreement of their genotypes."""
    finals, genotypes, seeds = [], [], []
    for d in run_dirs:
        if not (d / GENOTYPE_FILE).exists():
            continue
        epochs = [r for r in RunDir(d).read_metrics() if r.get("kind") == "epoch"]
        if epochs:
            finals.append(epochs[-1])
        genotypes.append(load_genotype(str(d)))
        seeds.append(d.name)
    numeric = sorted(
        {k for r in finals for k, v in r.items() if isinstance(v, int | float)}
        - {"epoch", "step", "time", "kind"}
    )
    metrics = {
        k: _mean_std([float(r[k]) for r in finals if isinstance(r.get(k), int | float)])
        for k in numeric
    }
    metrics = {k: v for k, v in metrics.items() if all(map(math.isfinite, v.values()))}
    return {
        "runs": seeds,
        "metrics": metrics,
        "distinct_genotypes": len({str(g) for g in genotypes}),
        "genotypes": {s: str(g) for s, g in zip(seeds, genotypes, strict=True)},
        "edge_agreement": edge_agreement(genotypes) if genotypes else {},
    }


def format_summary(summary: dict) -> str:
    """The summary as a text table."""
    lines = [f"{len(summary['runs'])} finished runs: {', '.join(summary['runs'])}"]
    lines.append(f"{'metric':24s} {'mean':>12s} {'std':>10s}")
    for k, v in summary["metrics"].items():
        lines.append(f"{k:24s} {v['mean']:>12.4f} {v['std']:>10.4f}")
    lines.append(f"distinct genotypes: {summary['distinct_genotypes']}")
    lines.append("edge agreement (most common choice, seeds agreeing):")
    for k, v in summary["edge_agreement"].items():
        lines.append(f"  {k:20s} {v['choice']:14s} {v['agree']}/{v['of']}")
    return "\n".join(lines)


def write_summary(out: Path, seeds: list[int]) -> dict:
    """Summarise the seeds' run directories into `<out>/summary.json`; return the summary."""
    summary = summarize([seed_dir(out, s) for s in seeds])
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
