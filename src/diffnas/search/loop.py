"""The search loop: data -> supernet -> strategy, epoch by epoch, with exact resume."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from diffnas.arch import ArchParameters
from diffnas.data import Augment, EpochBatches, cycle_batches, load_images, split_indices
from diffnas.runs.progress import Progress
from diffnas.runs.rng import capture_rng, restore_rng, seed_everything
from diffnas.search import STRATEGIES
from diffnas.spaces import build_supernet
from diffnas.spaces.genotypes import genotype_to_json

EpochHook = Callable[[object], dict]  # genotype -> extra metrics for the epoch record


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device = 'cuda' but no CUDA device is available; use 'cpu'")
    return torch.device(name)


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


def build_search(cfg) -> SearchSetup:
    """Seed, load data, build the supernet, the alphas and the strategy."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    seed_everything(cfg.run.seed)
    ds = load_images(cfg.data.dataset, "train", cfg.data.data_dir or None)
    n = min(cfg.data.limit, len(ds)) if cfg.data.limit else len(ds)
    train_idx, val_idx = split_indices(n, cfg.data.train_portion)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(
            f"data.limit={cfg.data.limit} with data.train_portion={cfg.data.train_portion} leaves "
            "an empty train or val split; raise data.limit"
        )
    aug = (
        Augment(ds.mean, ds.std, pad=4, flip=True, cutout=cfg.data.cutout)
        if cfg.data.augment
        else None
    )
    bs = cfg.data.batch_size
    # As in DARTS, the val half feeds the alpha steps with the same augmentation as training.
    train = EpochBatches(ds, train_idx, bs, aug, train=True, device=device)
    val = EpochBatches(ds, val_idx, bs, aug, train=True, device=device)
    val_eval = EpochBatches(ds, val_idx, cfg.data.eval_batch_size, None, train=False, device=device)
    model = build_supernet(cfg.space, ds.in_channels, ds.num_classes).to(device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    arch = ArchParameters(
        model.arch_shapes(), cfg.search.activation, cfg.search.alpha_init_std, gen
    ).to(device)
    strategy = STRATEGIES.get(cfg.search.strategy)(model, arch, cfg.search)
    return SearchSetup(strategy, train, val, val_eval, device)


def run_search(
    cfg,
    run,
    resume: bool = False,
    hooks: Sequence[EpochHook] = (),
    log: Callable[[str], None] = print,
):
    """Run (or resume) a search in run directory `run`; returns the final genotype."""
    s = build_search(cfg)
    strategy, start_epoch, global_step = s.strategy, 0, 0
    if resume:
        state = run.load_checkpoint()
        strategy.load_state_dict(state["strategy"])
        start_epoch, global_step = state["epoch"], state["global_step"]
        restore_rng(state["rng"])
        log(f"resumed {run.path} at epoch {start_epoch}/{cfg.search.epochs}")
    epochs = cfg.search.epochs
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        strategy.on_epoch_start(epoch)
        val_stream = cycle_batches(s.val, epoch_seed(cfg.run.seed, epoch, 1))
        bar = Progress(
            s.train.epoch(epoch_seed(cfg.run.seed, epoch, 0)),
            len(s.train),
            desc=f"epoch {epoch + 1}/{epochs}",
            enabled=cfg.run.progress,
            unit="step",
        )
        sums = {"train_loss": 0.0, "train_acc": 0.0, "val_loss": 0.0}
        n_steps = 0
        for train_batch in bar:
            m = strategy.step(train_batch, next(val_stream))
            n_steps += 1
            global_step += 1
            for k in sums:
                sums[k] += m[k]
            bar.update(loss=m["train_loss"], acc=m["train_acc"])
            if global_step % cfg.run.log_every == 0:
                run.log_metrics(
                    {"kind": "step", "epoch": epoch, "step": global_step, "lr": strategy.lr, **m}
                )
        record = {
            "kind": "epoch",
            "epoch": epoch,
            "step": global_step,
            "lr": strategy.lr,
            **{k: v / max(n_steps, 1) for k, v in sums.items()},
        }
        record.update(strategy.evaluate(s.val_eval.epoch(0)))
        genotype = strategy.genotype()
        record["genotype"] = str(genotype)
        for hook in hooks:
            record.update(hook(genotype))
        record["epoch_time_s"] = time.perf_counter() - t0
        run.log_metrics(record)
        with torch.no_grad():
            weights = {k: w.cpu().tolist() for k, w in strategy.arch.weights().items()}
        run.log_genotype(epoch, {**genotype_to_json(genotype), "weights": weights})
        run.save_checkpoint(
            {
                "strategy": strategy.state_dict(),
                "epoch": epoch + 1,
                "global_step": global_step,
                "rng": capture_rng(),
            }
        )
        log(_summary(record))
    genotype = strategy.genotype()
    run.write_genotype(genotype_to_json(genotype))
    return genotype


def _summary(r: dict) -> str:
    extra = f" nb201_acc={r['nb201_acc']:.2f}" if "nb201_acc" in r else ""
    return (
        f"epoch {r['epoch'] + 1}: train_loss={r['train_loss']:.4f} "
        f"train_acc={r['train_acc']:.2f} valid_acc={r['valid_acc']:.2f} "
        f"({r['epoch_time_s']:.1f}s){extra}\n  genotype: {r['genotype']}"
    )
