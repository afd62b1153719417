"""Random search with standalone training: the baseline every NAS method is compared with (Li
and Talwalkar, UAI 2019; Yang et al., "NAS evaluation is frustratingly hard", ICLR 2020).

`diffnas random-search` draws `search.random_samples` architectures uniformly from the space
(the single-path codec's sampler; `none` included where the space has it), trains each one's
final network from scratch for `search.random_epochs` epochs with the `[train]` recipe on the
search's weight half of the training images, scores it on the other half (the validation split
the differentiable searches train their alphas on) and keeps the best by validation accuracy.
The test split is never read. Every sample is one record in `metrics.jsonl`, followed by a
checkpoint, so a killed run resumes at the next sample and ends as an uninterrupted one would
(the samples are drawn from `run.seed` up front, each trained from its own seed).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import torch

from diffnas.data import EpochBatches
from diffnas.runs.config import ConfigError
from diffnas.runs.rng import seed_everything
from diffnas.search.loop import epoch_seed, image_split, resolve_device, search_task
from diffnas.search.single_path import path_codec
from diffnas.spaces import build_supernet
from diffnas.spaces.final import build_final_network, check_final_config, count_params
from diffnas.spaces.genotypes import genotype_from_json, genotype_to_json


def sample_genotypes(cfg, in_channels: int, num_classes: int, n: int) -> list:
    """`n` architectures drawn uniformly from the space of `cfg.space` (seeded by run.seed)."""
    model = build_supernet(cfg.space, in_channels, num_classes)
    codec = path_codec(model, sample_none=True)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    return [codec.genotype(codec.sample_all(gen)) for _ in range(n)]


def _halves(cfg, device):
    """The search's split of the training images: (dataset, weight half, validation half)."""
    ds, train_idx, val_idx, aug = image_split(cfg)
    train = EpochBatches(ds, train_idx, cfg.data.batch_size, aug, True, device)
    val = EpochBatches(ds, val_idx, cfg.data.eval_batch_size, None, False, device)
    return ds, train, val


def train_candidate(cfg, genotype, ds, train, val, seed: int) -> dict:
    """Train `genotype`'s final network for search.random_epochs epochs; its validation
    scores."""
    from diffnas.train.image import ImageTrainer

    seed_everything(seed)
    epochs, dtype = cfg.search.random_epochs, getattr(torch, cfg.run.dtype)
    train_cfg = dataclasses.replace(cfg.train, epochs=epochs)
    model = build_final_network(genotype, train_cfg, ds.in_channels, ds.num_classes)
    trainer = ImageTrainer(model.to(dtype), train_cfg, cfg.run.autocast)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        trainer.start_epoch(epoch)
        for x, y in train.epoch(epoch_seed(seed, epoch, 0)):
            trainer.step(x.to(dtype), y)
    scores = trainer.evaluate((x.to(dtype), y) for x, y in val.epoch(0))
    return {
        "valid_loss": scores["test_loss"],  # the trainer names its held-out split "test"
        "valid_acc": scores["test_acc"],
        "params": count_params(model),
        "train_time_s": time.perf_counter() - t0,
    }


def run_random_search(
    cfg,
    run,
    resume: bool = False,
    hooks: Sequence[Callable[[object], dict]] = (),
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
):
    """Run (or resume) a random search in `run`; returns the best genotype by validation
    accuracy. `stop_after` ends it after that many samples in all (to be resumed)."""
    if search_task(cfg) != "image":
        raise ConfigError("random search trains image networks: use an image space and dataset")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    n = cfg.search.random_samples
    ds, train, val = _halves(cfg, device)
    genotypes = sample_genotypes(cfg, ds.in_channels, ds.num_classes, n)
    check_final_config(genotypes[0], cfg.train)
    done = []
    if resume:
        start = run.load_checkpoint()["samples"]
        done = [r for r in run.read_metrics() if r.get("kind") == "sample"][:start]
        log(f"resumed {run.path} at sample {start}/{n}")
    end = n if stop_after is None else min(stop_after, n)
    for i in range(len(done), end):
        genotype = genotypes[i]
        record = {"kind": "sample", "sample": i, "genotype": str(genotype)}
        record.update(train_candidate(cfg, genotype, ds, train, val, seed=cfg.run.seed + 1 + i))
        for hook in hooks:  # ground truth for the log only; selection reads valid_acc alone
            record.update(hook(genotype))
        record["genotype_json"] = genotype_to_json(genotype)
        run.log_metrics(record)
        run.save_checkpoint({"samples": i + 1})
        done.append(record)
        best = max(done, key=lambda r: r["valid_acc"])
        extra = f" nb201_acc={record['nb201_acc']:.2f}" if "nb201_acc" in record else ""
        log(
            f"sample {i + 1}/{n}: valid_acc={record['valid_acc']:.2f} "
            f"({record['train_time_s']:.1f}s){extra}  best so far {best['valid_acc']:.2f}\n"
            f"  genotype: {genotype}"
        )
    best = max(done, key=lambda r: r["valid_acc"])
    if end == n:
        run.write_genotype(best["genotype_json"])
    return genotype_from_json(best["genotype_json"])
