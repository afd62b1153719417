"""The selection stage (`diffnas select RUN_DIR --method ...`), with exact resume.

The supernet comes from the finished search in RUN_DIR (its `checkpoint.pt`, read without
touching the search's files). The selection writes to its own run directory, by default
`RUN_DIR/select-<method>/`:

- `config.toml`: the search's config with the `[select]` section (and any `run.*` overrides);
- `decisions.jsonl`: one record per decision: the cell type, the edge (or node), every
  candidate's validation accuracy and loss with it removed, the choice, the time it took;
- `metrics.jsonl`: one record per tuning epoch (plus step records every `run.log_every` steps);
- `genotypes.jsonl`: the genotype (and projected edge weights) after each tuning epoch;
- `genotype.json`: the selected genotype (`diffnas train --genotype` reads the directory);
- `result.json`: a summary: method, genotype, decision and tuning times;
- `checkpoint.pt` / `checkpoint.prev.pt`: after every decision step and every tuning epoch.

Resume is explicit (`--resume`), as for searches: a checkpoint holds the supernet, the alphas,
both optimisers, the projection (decided edges and nodes), the RNG states and where the
schedule stands; the logs are cut back to it, so a selection killed at any moment and resumed
ends exactly like an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from diffnas.runs.config import Config, ConfigError, load_config, parse_override
from diffnas.runs.rng import capture_rng, restore_rng
from diffnas.runs.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CheckpointError,
    RunDir,
    RunDirError,
    restore_state,
)
from diffnas.search.loop import SearchSetup, build_search, train_epoch
from diffnas.select.perturbation import Perturbation
from diffnas.select.schedule import OP, pt_schedule
from diffnas.spaces.genotypes import genotype_to_json

DECISIONS_FILE = "decisions.jsonl"
RESULT_FILE = "result.json"
# What a selection may change of the search's config; the rest made the supernet.
OVERRIDABLE = ("select.", "run.", "data.eval_batch_size")


class SelectRunDir(RunDir):
    """A selection's run directory: a RunDir that also logs `decisions.jsonl`."""

    log_files = (*RunDir.log_files, DECISIONS_FILE)

    def log_decision(self, record: dict) -> None:
        """Append one decision record (plus its wall-clock `time`) to `decisions.jsonl`."""
        self._append_line(DECISIONS_FILE, {"time": time.time(), **record})

    def read_decisions(self) -> list[dict]:
        """The records of `decisions.jsonl`, oldest first."""
        path = self.path / DECISIONS_FILE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# The search run and the selection's config and directory
# ---------------------------------------------------------------------------------------------


def default_out(search_dir: str | Path, method: str) -> Path:
    """`RUN_DIR/select-<method>`."""
    return Path(search_dir) / f"select-{method}"


def select_config(search_dir: str | Path, method: str, overrides: Sequence[str] = ()) -> Config:
    """The search's config with `select.method = method` and `overrides`, which may only set
    `select.*`, `run.*` (not `run.out`) and `data.eval_batch_size`."""
    search_dir = Path(search_dir)
    if not search_dir.is_dir():
        raise RunDirError(f"{search_dir}: no such search run directory")
    if not (search_dir / CONFIG_FILE).is_file():
        raise RunDirError(
            f"{search_dir} has no {CONFIG_FILE}: not a run directory of `diffnas search`"
        )
    RunDir(search_dir).require_kind("search", "select from")
    for text in overrides:
        section, key, _ = parse_override(text)
        name = f"{section}.{key}"
        if name == "run.out" or not name.startswith(OVERRIDABLE):
            raise ConfigError(
                f"--set {text}: a selection can only change select.*, run.* (not run.out; use "
                "--out) and data.eval_batch_size; the other keys made the supernet"
            )
    return load_config(search_dir / CONFIG_FILE, [*overrides, f"select.method={method}"])


def load_supernet_state(search_dir: str | Path, cfg: Config) -> dict:
    """The strategy state in the finished search's `checkpoint.pt` (read only)."""
    path = Path(search_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{search_dir} has no {CHECKPOINT_FILE}: the search has not finished an epoch; run "
            f"or resume it first (`diffnas search --resume {search_dir}`)"
        )
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch reports a torn zip or bad pickle in many types
        raise CheckpointError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or "model" not in state.get("strategy", {}):
        raise CheckpointError(f"{path} is not the checkpoint of a search (no supernet in it)")
    if state.get("epoch") != cfg.search.epochs:
        raise RunDirError(
            f"the search in {search_dir} has not finished: its checkpoint is at epoch "
            f"{state.get('epoch')} of {cfg.search.epochs}; finish it first with "
            f"`diffnas search --resume {search_dir}`"
        )
    return state["strategy"]


def open_select_dir(
    search_dir: str | Path,
    method: str,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    resume: bool = False,
) -> tuple[Config, SelectRunDir]:
    """The selection's config and run directory: created fresh (after checking the search), or,
    with `resume`, opened with its own `config.toml`."""
    run = SelectRunDir(out or default_out(search_dir, method))
    if resume:
        if overrides:
            raise ConfigError("--resume uses the selection's own config.toml; drop --set")
        run = SelectRunDir.open_existing(run.path, "select")
        cfg = run.read_config()
        if cfg.select.method != method:
            raise ConfigError(f"{run.path} holds a {cfg.select.method!r} selection, not {method!r}")
        return cfg, run
    cfg = select_config(search_dir, method, overrides)
    load_supernet_state(search_dir, cfg)  # a search that cannot be selected from fails here
    if run.has_checkpoint():
        raise RunDirError(
            f"{run.path} already holds a {method} selection; pass --resume to continue it, or "
            "--out DIR for another one"
        )
    cfg.run.out = str(run.path)
    return cfg, run.create(cfg, "select", method=method, search=str(search_dir))


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


def tune_config(cfg: Config) -> Config:
    """The config the tuning strategy is built from: the search's, with a constant learning
    rate (`select.lr`, or `search.w_lr` / 10), first-order alpha steps (none with
    `select.fix_alpha` or `search.fix_alpha`) and no regulariser. The data split stays the
    search's."""
    s = cfg.search
    lr = cfg.select.lr or s.w_lr / 10
    search = dataclasses.replace(
        s,
        order=1,
        w_lr=lr,
        w_lr_min=lr,
        regularizer="none",
        fix_alpha=s.fix_alpha or cfg.select.fix_alpha,
    )
    return dataclasses.replace(cfg, search=search)


def run_select(
    cfg: Config,
    search_dir: str | Path,
    run: SelectRunDir,
    resume: bool = False,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
):
    """Run (or resume) the selection `cfg.select.method` on the supernet of the search in
    `search_dir`, writing to `run`; returns the genotype (None when `stop_after` tuning epochs
    ended it early, leaving a checkpoint to resume)."""
    from diffnas.search.growing import GROWERS
    from diffnas.select import SELECTORS  # the registry imports this module

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("diffnas select runs in a single process; start it without torchrun")
    selector = SELECTORS.get(cfg.select.method)
    state = load_supernet_state(search_dir, cfg)
    setup = build_search(tune_config(cfg))
    strategy = setup.strategy
    if hasattr(strategy, "grower"):
        # A grown supernet: the search's grower replays its growth steps (the supernet's size
        # is part of its state); the tuning itself never grows.
        strategy.grower.load_state_dict(state.get("grower", {}))
        strategy.grower = GROWERS.get("none")(cfg.search, strategy)
    restore_state(strategy.model, state["model"], search_dir)
    restore_state(strategy.arch, state["arch"], search_dir)
    # The architect carries on with its Adam state; the weights get a fresh optimiser.
    # Single-path supernets (search.strategy novelty, random_path) learn no alphas: no Adam.
    if "a_optimizer" in state:
        restore_state(strategy.a_optimizer, state["a_optimizer"], search_dir)
    return selector(setup, cfg, run, resume=resume, log=log, stop_after=stop_after)


def perturbation_select(
    setup: SearchSetup,
    cfg: Config,
    run: SelectRunDir,
    resume: bool = False,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
):
    """DARTS-PT: decide the edges (and nodes) one step at a time on the schedule of
    `diffnas.select.schedule`, tuning the supernet between decisions; see `run_select`."""
    strategy = setup.strategy
    seed = cfg.run.seed if cfg.select.seed < 0 else cfg.select.seed
    # Scored by every candidate of every decision: prepared once.
    val = list(setup.batches(setup.val_eval.epoch(0), shard=False))
    pt = Perturbation(strategy.model, strategy.arch, val, cfg.select, seed)
    schedule = pt_schedule(pt.layout.op_steps, pt.layout.node_steps, cfg.select.proj_intv)
    epochs = schedule.tune_epochs
    start, decided, global_step = 0, False, 0
    if resume:
        state = run.load_checkpoint()
        restore_state(strategy, state["strategy"], run.path, run.edited_keys())
        restore_state(pt.projection, state["projection"], run.path, run.edited_keys())
        start, decided, global_step = state["epoch"], state["decided"], state["global_step"]
        restore_rng(state["rng"])
        log(f"resumed {run.path} at tuning epoch {start}/{epochs}")
    else:
        log(
            f"DARTS-PT: {len(schedule.decisions)} decision steps in {epochs} tuning epochs "
            f"(decisions at epochs {', '.join(str(e) for e, _ in schedule.decisions)})"
        )

    def save(epoch: int, decided: bool) -> None:
        run.save_checkpoint(
            {
                "method": "perturbation",
                "strategy": strategy.state_dict(),
                "projection": pt.projection.state_dict(),
                "epoch": epoch,
                "decided": decided,
                "global_step": global_step,
                "rng": capture_rng(),
            }
        )

    end = epochs if stop_after is None else min(stop_after, epochs)
    for epoch in range(start, end):
        kind = schedule.kind_at(epoch)
        if kind is not None and not (decided and epoch == start):
            step = schedule.step_at(epoch)
            records = pt.op_step(step) if kind == OP else pt.node_step(step)
            for r in records:
                run.log_decision({"step": step, "epoch": epoch, **r})
                log(describe_decision(step, len(schedule.decisions), r))
            save(epoch, decided=True)
        t0 = time.perf_counter()
        means, global_step = train_epoch(
            setup,
            cfg,
            run,
            epoch,
            global_step,
            seed=seed,
            desc=f"tune {epoch + 1}/{epochs}",
            data_epoch=cfg.search.epochs + epoch,  # the search's data streams, continued
        )
        record = {"kind": "epoch", "epoch": epoch, "step": global_step, "lr": strategy.lr}
        record.update(means)
        record.update(strategy.evaluate(val))
        genotype = strategy.genotype()
        record["genotype"] = str(genotype)
        record["decided_edges"] = sum(int(d.sum()) for d in pt.projection.decided.values())
        record["epoch_time_s"] = time.perf_counter() - t0
        run.log_metrics(record)
        with torch.no_grad():
            weights = {k: w.cpu().tolist() for k, w in strategy.arch.weights().items()}
        run.log_genotype(epoch, {**genotype_to_json(genotype), "weights": weights})
        save(epoch + 1, decided=False)
        log(
            f"tune {epoch + 1}/{epochs}: train_loss={record['train_loss']:.4f} "
            f"valid_acc={record['valid_acc']:.2f} ({record['epoch_time_s']:.1f}s)"
        )
    if end < epochs:
        return None
    if not pt.projection.complete:  # cannot happen with a consistent schedule; guard anyway
        raise RuntimeError("the DARTS-PT schedule ended with undecided edges")
    genotype = strategy.genotype()
    run.write_genotype(genotype_to_json(genotype))
    run.write_json(RESULT_FILE, _result(run, cfg, genotype, epochs))
    return genotype


def _result(run: SelectRunDir, cfg: Config, genotype, epochs: int) -> dict:
    """The summary of a finished perturbation selection, from its logs (all sessions)."""
    decisions = run.read_decisions()
    tuned = [r for r in run.read_metrics() if r.get("kind") == "epoch"]
    return {
        "method": "perturbation",
        "genotype": str(genotype),
        "criterion": cfg.select.criterion,
        "proj_intv": cfg.select.proj_intv,
        "tune_epochs": epochs,
        "decisions": len(decisions),
        "decision_time_s": sum(r["time_s"] for r in decisions),
        "tune_time_s": sum(r["epoch_time_s"] for r in tuned),
        "valid_acc": tuned[-1]["valid_acc"] if tuned else None,
    }


def describe_decision(step: int, steps: int, r: dict) -> str:
    """One log line of a decision record."""
    if r["decision"] == "op":
        scores = ", ".join(f"{c['op']} {c['acc']:.1f}" for c in r["candidates"])
        return (
            f"step {step + 1}/{steps} {r['cell']}: edge {r['from']}->{r['to']} = {r['chosen']} "
            f"(acc without: {scores}; {r['time_s']:.1f}s)"
        )
    return (
        f"step {step + 1}/{steps} {r['cell']}: node {r['node']} keeps inputs {r['kept_from']} "
        f"({r['time_s']:.1f}s)"
    )
