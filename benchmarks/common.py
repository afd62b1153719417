"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

from pathlib import Path

from diffnas.runs.config import load_config
from diffnas.runs.rundir import RunDir


def run_stage(path: Path, config: str | None, overrides: list[str], fn, **kw):
    """`fn(cfg, run, resume=...)` in run directory `path`: resumed when it has a checkpoint,
    started from `config` + `overrides` (plus `run.out=path`) otherwise."""
    run = RunDir(path)
    if (path / "checkpoint.pt").exists() or (path / "checkpoint.prev.pt").exists():
        return fn(run.read_config(), run, resume=True, **kw)
    cfg = load_config(config, [*overrides, f"run.out={path}"])
    return fn(cfg, run.create(cfg), **kw)
