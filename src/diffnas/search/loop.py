"""The search loop: data -> supernet -> strategy, epoch by epoch, with exact resume."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from diffnas.arch import ACTIVATIONS, ArchParameters
from diffnas.data import Augment, EpochBatches, cycle_batches, load_images, split_indices
from diffnas.registry import Registry
from diffnas.runs import distributed, precision, tensorboard
from diffnas.runs.config import ConfigError
from diffnas.runs.nonfinite import NonFiniteGuard
from diffnas.runs.progress import Progress
from diffnas.runs.rng import capture_rng, restore_rng, seed_everything
from diffnas.runs.rundir import restore_state
from diffnas.search import STRATEGIES
from diffnas.search.diagnostics import collapse_diagnostics, collapse_warning, search_warnings
from diffnas.search.objectives import OBJECTIVES, Objective
from diffnas.spaces import build_supernet, space_task, space_tasks
from diffnas.spaces.genotypes import genotype_to_json

Batch = tuple[torch.Tensor, torch.Tensor]

EpochHook = Callable[[object], dict]  # genotype -> extra metrics for the epoch record


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device = 'cuda' but no CUDA device is available; use 'cpu'")
    return torch.device(name)


def train_portion(search_cfg, portion: float) -> float:
    """`data.train_portion`, or f/(f+1) when `search.match_split` pairs the split with an
    alpha step every f iterations."""
    if search_cfg.match_split and search_cfg.alpha_schedule != "every":
        return search_cfg.alpha_every / (search_cfg.alpha_every + 1)
    return portion


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent, reproducible seed of one data stream (0 train, 1 val) in one epoch."""
    return (seed * 1_000_003 + epoch * 7 + stream) % 2**63


@dataclass
class SearchSetup:
    """Everything a search run needs, built from the config."""

    strategy: object
    train: EpochBatches
    val: EpochBatches
    val_eval: EpochBatches
    device: torch.device
    dtype: torch.dtype = torch.float32
    objective: Objective | None = None  # None: the strategy's own (image classification)

    @property
    def headline(self) -> str:
        """The task's headline metric, logged as train_<headline> and valid_<headline>."""
        return "acc" if self.objective is None else self.objective.headline

    def batches(self, batches: Iterable[Batch], shard: bool = True) -> Iterator[Batch]:
        """Global batches in the run's dtype, as this rank's shards (or, for eval, row splits).
        Integer inputs (token ids) keep their type."""
        for x, y in batches:
            batch = (x.to(self.dtype) if x.is_floating_point() else x, y)
            yield distributed.shard(batch) if shard else distributed.split_rows(batch)


@dataclass
class SearchData:
    """A task's data for a search: the batch sources and what the supernet and strategy need.

    `train`, `val` and `val_eval` have `len()` and `epoch(seed)` (an iterator of batches);
    `train` feeds the weight steps, `val` (cycled) the alpha steps, `val_eval` the per-epoch
    evaluation. `space_options` go to the space's factory.
    """

    train: object
    val: object
    val_eval: object
    in_channels: int
    num_classes: int
    space_options: dict = field(default_factory=dict)
    objective: Objective | None = None


# Data of a search by its task (`search.task`, else the space's own, `diffnas.spaces.space_task`):
# `fn(cfg, device)`.
SEARCH_TASKS: Registry = Registry("search task")


def image_split(cfg):
    """The search's split of the training images: (dataset, indices of the weights' half, of
    the validation half, the training augmentation or None)."""
    ds = load_images(cfg.data.dataset, "train", cfg.data.data_dir or None, cfg.data)
    n = min(cfg.data.limit, len(ds)) if cfg.data.limit else len(ds)
    train_idx, val_idx = split_indices(n, train_portion(cfg.search, cfg.data.train_portion))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ConfigError(
            f"data.limit = {cfg.data.limit} with data.train_portion = {cfg.data.train_portion} "
            f"leaves an empty train or val split ({len(train_idx)} / {len(val_idx)} images); "
            "raise data.limit"
        )
    aug = (
        Augment(ds.mean, ds.std, pad=4, flip=True, cutout=cfg.data.cutout)
        if cfg.data.augment
        else None
    )
    return ds, train_idx, val_idx, aug


@SEARCH_TASKS.register("image")
def image_search_data(cfg, device: torch.device) -> SearchData:
    """The training images split into the weights' and the alphas' halves."""
    ds, train_idx, val_idx, aug = image_split(cfg)
    bs = cfg.data.batch_size
    distributed.check_batches({"train": len(train_idx), "val": len(val_idx)}, bs)
    # As in DARTS, the val half feeds the alpha steps with the same augmentation as training.
    train = EpochBatches(ds, train_idx, bs, aug, train=True, device=device)
    val = EpochBatches(ds, val_idx, bs, aug, train=True, device=device)
    val_eval = EpochBatches(ds, val_idx, cfg.data.eval_batch_size, None, train=False, device=device)
    return SearchData(train, val, val_eval, ds.in_channels, ds.num_classes)


@SEARCH_TASKS.register("lm")
def lm_search_data(cfg, device: torch.device) -> SearchData:
    """A word-level corpus (`lm.data_dir`, default PTB): the weights train on the train split
    (`data.limit` tokens, randomised BPTT lengths), the alphas on the valid split (as the
    original), which also gives the per-epoch validation perplexity."""
    from diffnas.data.text import BPTTBatches, batchify, load_corpus

    if distributed.is_distributed():
        raise ConfigError("the language-model search runs in a single process (no torchrun)")
    lm = cfg.lm
    corpus = load_corpus(lm.data_dir)
    train_ids = corpus.train[: cfg.data.limit] if cfg.data.limit else corpus.train
    valid_ids = corpus.valid[: lm.valid_limit] if lm.valid_limit else corpus.valid
    bs = cfg.data.batch_size
    train = BPTTBatches(
        batchify(train_ids, bs, "train"),
        lm.bptt,
        random_lengths=True,
        seq_len_std=lm.seq_len_std,
        max_seq_len_delta=lm.max_seq_len_delta,
        device=device,
    )
    val = BPTTBatches(batchify(valid_ids, bs, "valid"), lm.bptt, device=device)
    val_eval = BPTTBatches(
        batchify(valid_ids, cfg.data.eval_batch_size, "valid"), lm.bptt, device=device
    )
    objective = OBJECTIVES.get("lm")(cfg)
    return SearchData(train, val, val_eval, lm.emsize, corpus.ntokens, {"lm": lm}, objective)


@SEARCH_TASKS.register("forecast")
def forecast_search_data(cfg, device: torch.device) -> SearchData:
    """A series under `[forecast]`'s protocol: the weights train on the protocol's train split
    (`forecast.train_windows` random windows per epoch if > 0), the alphas, and the per-epoch
    metrics, on the windows `forecast.search_split` names (the validation split, or the later
    part of the training windows). The test split is never read."""
    from diffnas.data.forecast_protocols import (
        FORECAST_SEARCH_SPLITS,
        WindowBatches,
        load_forecast_data,
    )
    from diffnas.spaces.forecaster import ForecastShape

    if distributed.is_distributed():
        raise ConfigError("the forecasting search runs in a single process (no torchrun)")
    f = cfg.forecast
    data = load_forecast_data(cfg, device, getattr(torch, cfg.run.dtype))
    weight_windows, alpha_windows = FORECAST_SEARCH_SPLITS.get(f.search_split)(
        data, cfg.data.train_portion
    )
    bs = cfg.data.batch_size
    train = WindowBatches(weight_windows, bs, shuffle=True, limit=f.train_windows)
    val = WindowBatches(alpha_windows, bs, shuffle=True)
    val_eval = WindowBatches(alpha_windows, cfg.data.eval_batch_size, shuffle=False)
    shape = ForecastShape(data.n_series, f.lookback, f.horizon, data.protocol.single_step)
    options = {"task": "forecast", "shape": shape, "forecast": f, "lm": cfg.lm}
    objective = OBJECTIVES.get("forecast")(cfg, data)
    return SearchData(train, val, val_eval, data.n_series, data.n_series, options, objective)


def search_task(cfg) -> str:
    """The task a search runs on: `search.task`, or the space's own; a clear error when the
    space cannot search on it."""
    task = cfg.search.task or space_task(cfg.space.name)
    allowed = space_tasks(cfg.space.name)
    if task not in allowed:
        raise ConfigError(
            f"search.task = {task!r}: the space {cfg.space.name!r} searches on "
            f"{', '.join(map(repr, allowed))} only"
        )
    return task


def build_search(cfg) -> SearchSetup:
    """Seed, load data, build the supernet, the alphas and the strategy (on every rank)."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = distributed.init_from_env(resolve_device(cfg.run.device))
    precision.check_autocast(cfg.run, device)
    # Every rank seeds alike, so each builds the same model, alphas and global batches.
    seed_everything(cfg.run.seed)
    data = SEARCH_TASKS.get(search_task(cfg))(cfg, device)
    dtype = getattr(torch, cfg.run.dtype)
    drop_none = not ACTIVATIONS.get(cfg.search.activation).uses_none
    model = build_supernet(
        cfg.space, data.in_channels, data.num_classes, drop_none, **data.space_options
    )
    model = model.to(device, dtype)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if distributed.is_distributed() and cfg.run.sync_bn:
        model = distributed.convert_sync_batchnorm(model)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    # Frozen alphas (search.fix_alpha) start noise-free: uniform edge weights under softmax.
    init_std = 0.0 if cfg.search.fix_alpha else cfg.search.alpha_init_std
    arch = ArchParameters(model.arch_shapes(), cfg.search.activation, init_std, gen).to(
        device, dtype
    )
    # Identical already by seeding; rank 0's copy makes it certain (other torch builds, GPUs).
    distributed.broadcast_module(model)
    distributed.broadcast_module(arch)
    # Image tasks leave the objective to the search (None in the setup, which selection reads
    # as "image"); it is built here so that it carries run.autocast.
    objective = data.objective if data.objective is not None else OBJECTIVES.get("image")(cfg)
    strategy = STRATEGIES.get(cfg.search.strategy)(
        model, arch, cfg.search, steps_per_epoch=len(data.train), objective=objective
    )
    if cfg.search.grower != "none" and not hasattr(strategy, "grower"):
        raise ConfigError(f"search.grower = {cfg.search.grower!r} needs search.strategy = 'darts'")
    return SearchSetup(strategy, data.train, data.val, data.val_eval, device, dtype, data.objective)


def train_epoch(
    s: SearchSetup,
    cfg,
    run,
    epoch: int,
    global_step: int,
    seed: int,
    desc: str,
    data_epoch: int | None = None,
) -> tuple[dict[str, float], int]:
    """One epoch of strategy steps over the train split; (mean metrics, new global step).

    The batches are those of `data_epoch` (default `epoch`) under `seed`. Rank 0 logs a step
    record to `run` every `run.log_every` steps.
    """
    strategy, main = s.strategy, distributed.is_main()
    data_epoch = epoch if data_epoch is None else data_epoch
    strategy.on_epoch_start(epoch)
    # Every rank walks the same global batches and trains on its shard of each.
    val_stream = s.batches(cycle_batches(s.val, epoch_seed(seed, data_epoch, 1)))
    next_val = functools.partial(next, val_stream)  # drawn only for alpha steps
    bar = Progress(
        s.batches(s.train.epoch(epoch_seed(seed, data_epoch, 0))),
        len(s.train),
        desc=desc,
        enabled=cfg.run.progress and main,
        unit="step",
    )
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    guard = NonFiniteGuard(
        cfg.run.on_nonfinite,
        strategy,
        lambda: [*strategy.model.parameters(), *strategy.arch.parameters()],
        run,
    )
    for train_batch in bar:
        m = guard.run_step(
            lambda b=train_batch: strategy.step(b, next_val),
            lambda m: {k: v for k, v in m.items() if k.endswith("loss")},
            f"epoch {epoch + 1}, step {global_step + 1}",
        )
        global_step += 1
        if m is None:
            continue  # undone (run.on_nonfinite = "skip")
        for k, v in m.items():  # val_loss only on iterations with an alpha step
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
        h = s.headline
        bar.update(loss=m["train_loss"], **{h: m[f"train_{h}"]})
        if main and global_step % cfg.run.log_every == 0:
            run.log_metrics(
                {"kind": "step", "epoch": epoch, "step": global_step, "lr": strategy.lr, **m}
            )
    means = {k: v / counts[k] for k, v in sums.items()}
    if s.objective is not None:
        means = s.objective.epoch_metrics(means)
    means.update(guard.finish(f"epoch {epoch + 1}"))
    return means, global_step


def run_search(
    cfg,
    run,
    resume: bool = False,
    hooks: Sequence[EpochHook] = (),
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
):
    """Run (or resume) a search in run directory `run`; returns the genotype it ends with.

    `stop_after` ends the run after that many epochs in all (a checkpoint, no `genotype.json`),
    leaving it to be resumed later, possibly with another number of processes. Under torchrun
    every rank calls this; only rank 0 writes `run` and calls `log` and the hooks.
    """
    s = build_search(cfg)
    main = distributed.is_main()
    strategy, start_epoch, global_step = s.strategy, 0, 0
    if resume:
        # Rank 0 reads the checkpoint (and cuts the logs back to it); the others get its bytes.
        state = distributed.broadcast_object(run.load_checkpoint() if main else None)
        restore_state(strategy, state["strategy"], run.path, run.edited_keys())
        start_epoch, global_step = state["epoch"], state["global_step"]
        restore_rng(state["rng"])
        if main:
            log(f"resumed {run.path} at epoch {start_epoch}/{cfg.search.epochs}")
    epochs = cfg.search.epochs
    end_epoch = epochs if stop_after is None else min(stop_after, epochs)
    writer = tensorboard.open_writer(run.path, cfg.run.tensorboard and main)
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        means, global_step = train_epoch(
            s, cfg, run, epoch, global_step, seed=cfg.run.seed, desc=f"epoch {epoch + 1}/{epochs}"
        )
        record = {
            "kind": "epoch",
            "epoch": epoch,
            "step": global_step,
            "lr": strategy.lr,
            **means,
            **strategy.arch_metrics(),
        }
        record.update(strategy.evaluate(s.batches(s.val_eval.epoch(0), shard=False)))
        if hasattr(strategy, "on_epoch_end"):  # the grower may grow here, before the checkpoint
            record.update(strategy.on_epoch_end(epoch, record))
        if not main:
            continue
        genotype = strategy.genotype()
        record["genotype"] = str(genotype)
        with torch.no_grad():
            weights = {k: w.cpu() for k, w in strategy.arch.weights().items()}
        record.update(collapse_diagnostics(genotype, weights))
        record["collapse_warning"] = collapse_warning(record, cfg.search.collapse_warn) is not None
        warnings = search_warnings(record, cfg.search.collapse_warn, cfg.search.uniform_warn)
        for hook in hooks:
            record.update(hook(genotype))
        record["epoch_time_s"] = time.perf_counter() - t0
        run.log_metrics(record)
        tensorboard.log_epoch(writer, record, weights)
        weights = {k: w.tolist() for k, w in weights.items()}
        run.log_genotype(epoch, {**genotype_to_json(genotype), "weights": weights})
        run.save_checkpoint(
            {
                "strategy": strategy.state_dict(),
                "epoch": epoch + 1,
                "global_step": global_step,
                "rng": capture_rng(),
            }
        )
        log(_summary(record, s.headline))
        for warning in warnings:
            log(warning)
    genotype = strategy.genotype()
    if main and end_epoch == epochs:
        run.write_genotype(genotype_to_json(genotype))
    # When any rank returns, the run directory is complete.
    distributed.barrier()
    return genotype


def _summary(r: dict, headline: str = "acc") -> str:
    extra = f" nb201_acc={r['nb201_acc']:.2f}" if "nb201_acc" in r else ""
    h = headline
    return (
        f"epoch {r['epoch'] + 1}: train_loss={r['train_loss']:.4f} "
        f"train_{h}={r[f'train_{h}']:.2f} valid_{h}={r[f'valid_{h}']:.2f} "
        f"({r['epoch_time_s']:.1f}s){extra}\n  genotype: {r['genotype']}"
    )
