"""Image classification: train a genotype's final network from scratch, with exact resume.

Trains on the whole training split (`data.limit` caps it) and reports loss and accuracy on the
test split after every epoch. Under torchrun it trains data-parallel: `data.batch_size` is the
global batch, each rank trains on its shard, gradients are averaged over the ranks before the
clip and the step (so every replica stays identical), batch norm uses the global batch's
statistics with `run.sync_bn`, the test split is shared out by rows, and rank 0 alone writes.
Drop-path masks are drawn per rank from a generator seeded by (seed, epoch, rank), so each rank
masks its own images and an epoch's randomness does not depend on where a run was resumed.

The run directory gets `metrics.jsonl` (one record per epoch), `genotype.json`, checkpoints
after every epoch, and `result.json` at the end (final test accuracy, parameter count,
multiply-adds).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.data import Augment, EpochBatches, load_images
from diffnas.runs import distributed, precision, tensorboard
from diffnas.runs.nonfinite import NonFiniteGuard
from diffnas.runs.progress import Progress
from diffnas.runs.rng import capture_rng, seed_everything
from diffnas.runs.rundir import resume_trainer
from diffnas.runs.schedules import LR_SCHEDULES
from diffnas.search.darts import accuracy
from diffnas.search.loop import epoch_seed, resolve_device
from diffnas.search.objectives import classification_scores
from diffnas.spaces.final import build_final_network, count_macs, count_params
from diffnas.spaces.genotypes import genotype_to_json, load_genotype

RESULT_FILE = "result.json"



class ImageTrainer:
    """The network, its optimiser and one epoch of training or evaluation."""

    def __init__(self, model: nn.Module, cfg, autocast: str = "off"):
        self.model, self.cfg, self.autocast = model, cfg, autocast
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
        )

    def start_epoch(self, epoch: int) -> dict[str, float]:
        """Set the epoch's learning rate (`train.lr_schedule`) and drop-path rate (linear
        ramp)."""
        lr = LR_SCHEDULES.get(self.cfg.lr_schedule)(epoch, self.cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        drop = self.cfg.drop_path * epoch / self.cfg.epochs
        self.model.drop_path_prob = drop
        return {"lr": lr, "drop_path": drop}

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with the configured label smoothing."""
        return F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One SGD step; the auxiliary head's loss joins with its weight. Returns (loss, acc)."""
        self.model.train()
        with precision.autocast(x.device, self.autocast):
            logits, aux = self.model(x, with_aux=True)
            loss = self.loss(logits, y)
            total = loss if aux is None else loss + self.cfg.auxiliary_weight * self.loss(aux, y)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        distributed.average_gradients(self.model.parameters())
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return loss.item(), accuracy(logits, y)

    def evaluate(self, batches) -> dict[str, float]:
        """Test loss and accuracy in eval mode (no drop-path, no auxiliary head, BN statistics);
        under torchrun each rank scores its rows of every batch and the sums are all-reduced."""
        self.model.eval()
        rows = (distributed.split_rows(batch) for batch in batches)
        loss, acc = classification_scores(self.model, rows, self.autocast)
        self.model.train()
        return {"test_loss": loss, "test_acc": acc}

    def state_dict(self) -> dict:
        """Everything needed to continue exactly."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def drop_path_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the global torch generator for one epoch of one rank (its drop-path masks)."""
    return (epoch_seed(seed, epoch, 2) * 1_000_003 + rank) % 2**63


def train_image(
    cfg,
    run,
    resume: bool = False,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> dict:
    """Train (or resume) the final network of `cfg.train.genotype` in run directory `run`.

    `stop_after` ends the run after that many epochs in all (a checkpoint, no result), to be
    resumed later, possibly with another number of processes. Returns the result record (also
    written to `result.json` when finished); under torchrun every rank calls this, and the
    ranks other than 0 return their last epoch record and write nothing.
    """
    t_start = time.perf_counter()
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = distributed.init_from_env(resolve_device(cfg.run.device))
    precision.check_autocast(cfg.run, device)
    main = distributed.is_main()
    dtype = getattr(torch, cfg.run.dtype)
    genotype = load_genotype(cfg.train.genotype)
    seed_everything(cfg.run.seed)
    train_ds = load_images(cfg.data.dataset, "train", cfg.data.data_dir or None, cfg.data)
    test_ds = load_images(cfg.data.dataset, "test", cfg.data.data_dir or None, cfg.data)
    n = min(cfg.data.limit, len(train_ds)) if cfg.data.limit else len(train_ds)
    distributed.check_batches({"train": n}, cfg.data.batch_size)
    memory_format = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    aug = (
        Augment(train_ds.mean, train_ds.std, pad=4, flip=True, cutout=cfg.data.cutout)
        if cfg.data.augment
        else None
    )
    train = EpochBatches(
        train_ds, torch.arange(n), cfg.data.batch_size, aug, True, device, False, memory_format
    )
    # Test images are normalised with the training split's statistics.
    test_aug = Augment(train_ds.mean, train_ds.std, pad=0, flip=False)
    test = EpochBatches(
        test_ds,
        torch.arange(len(test_ds)),
        cfg.data.eval_batch_size,
        test_aug,
        False,
        device,
        False,
        memory_format,
    )
    model = build_final_network(genotype, cfg.train, train_ds.in_channels, train_ds.num_classes)
    model = model.to(device, dtype, memory_format=memory_format)
    if distributed.is_distributed() and cfg.run.sync_bn:
        model = distributed.convert_sync_batchnorm(model)
    distributed.broadcast_module(model)  # identical by seeding; rank 0's makes it certain
    trainer = ImageTrainer(model, cfg.train, cfg.run.autocast)
    shape = (train_ds.in_channels, train_ds.image_size, train_ds.image_size)
    sizes = {
        "params": count_params(model),
        "params_with_aux": count_params(model, auxiliary=True),
        "macs": count_macs(model, shape),
    }
    start_epoch = 0
    if resume:
        state = resume_trainer(run, trainer, cfg.train.epochs, log)
        start_epoch = state["epoch"]
    elif main:
        run.write_genotype(genotype_to_json(genotype))
        log(
            f"{type(model).__name__} of {genotype}: {sizes['params'] / 1e6:.3f}M parameters"
            f" ({sizes['params_with_aux'] / 1e6:.3f}M with the auxiliary head)"
        )
    epochs = cfg.train.epochs
    end_epoch = epochs if stop_after is None else min(stop_after, epochs)
    writer = tensorboard.open_writer(run.path, cfg.run.tensorboard and main)
    record = {}
    for epoch in range(start_epoch, end_epoch):
        guard = NonFiniteGuard(
            cfg.run.on_nonfinite, trainer, lambda: trainer.model.parameters(), run
        )
        t0 = time.perf_counter()
        schedule = trainer.start_epoch(epoch)
        torch.manual_seed(drop_path_seed(cfg.run.seed, epoch, distributed.rank()))
        bar = Progress(
            train.epoch(epoch_seed(cfg.run.seed, epoch, 0)),
            len(train),
            desc=f"epoch {epoch + 1}/{epochs}",
            enabled=cfg.run.progress and main,
            unit="step",
        )
        loss_sum = acc_sum = 0.0
        for i, batch in enumerate(bar):
            x, y = distributed.shard(batch)
            out = guard.run_step(
                lambda x=x, y=y: trainer.step(x.to(dtype), y),
                lambda out: {"train_loss": out[0]},
                f"epoch {epoch + 1}, step {i + 1}",
            )
            if out is None:
                continue
            loss, acc = out
            loss_sum, acc_sum = loss_sum + loss, acc_sum + acc
            bar.update(loss=loss, acc=acc)
        # Equal shards: the mean over the ranks of their means is the global batches' mean.
        loss_sum, acc_sum = (
            v / distributed.world_size() for v in distributed.sum_floats([loss_sum, acc_sum])
        )
        steps = max(guard.done, 1)
        record = {
            "kind": "epoch",
            "epoch": epoch,
            **schedule,
            "train_loss": loss_sum / steps,
            "train_acc": acc_sum / steps,
            **guard.finish(f"epoch {epoch + 1}"),
            **trainer.evaluate((x.to(dtype), y) for x, y in test.epoch(0)),
            "epoch_time_s": time.perf_counter() - t0,
        }
        if not main:
            continue
        run.log_metrics(record)
        tensorboard.log_epoch(writer, record)
        run.save_checkpoint(
            {"trainer": trainer.state_dict(), "epoch": epoch + 1, "rng": capture_rng()}
        )
        log(
            f"epoch {epoch + 1}: train_loss={record['train_loss']:.4f} "
            f"train_acc={record['train_acc']:.2f} test_acc={record['test_acc']:.2f} "
            f"({record['epoch_time_s']:.1f}s)"
        )
    if end_epoch == epochs and main:
        if not record:  # resumed a finished run: its last epoch record is the result
            record = run.read_metrics()[-1]
        record = {
            "genotype": str(genotype),
            "network": type(model).__name__,
            "epochs": epochs,
            "test_acc": record["test_acc"],
            "test_loss": record["test_loss"],
            **sizes,
            "input_shape": list(shape),
            "wall_s_this_session": time.perf_counter() - t_start,
        }
        run.write_json(RESULT_FILE, record)
    distributed.barrier()  # when any rank returns, the run directory is complete
    return record
