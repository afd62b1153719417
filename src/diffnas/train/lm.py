"""Language modelling: train a recurrent core (a DARTS cell, an LSTM, a GRU) on a word corpus.

The model is `embedding -> core -> decoder tied to the embedding` (`RNNLanguageModel`), with the
DARTS / AWD-LSTM regularisation (embedding dropout, locked dropouts, AR/TAR) and training loop:
consecutive BPTT segments of randomised length with the hidden state carried across them, the
learning rate scaled by segment length / bptt, plain SGD until the validation loss stops
improving in the non-monotone sense (worse than the best of all but the last `lm.nonmono`
epochs), then averaged SGD (ASGD), whose averaged weights are evaluated and kept. The model
with the best validation loss is scored on the test split at the end.

The run directory gets `metrics.jsonl` (one record per epoch: train/valid loss and perplexity,
the optimiser), checkpoints after every epoch (model, optimiser, trigger history, the best
model so far, RNG states: a resume is exact), `genotype.json` for a DARTS cell, and
`result.json` (valid_ppl and test_ppl of the best model, parameters).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.data.text import BPTTBatches, batchify, load_corpus
from diffnas.runs import tensorboard
from diffnas.runs.config import ConfigError
from diffnas.runs.nonfinite import NonFiniteGuard
from diffnas.runs.progress import Progress
from diffnas.runs.rng import capture_rng, seed_everything
from diffnas.runs.rundir import resume_trainer
from diffnas.search.loop import epoch_seed, resolve_device
from diffnas.search.objectives import perplexity
from diffnas.spaces.final import count_params
from diffnas.spaces.genotypes import genotype_to_json, load_genotype
from diffnas.spaces.language_model import RNNLanguageModel
from diffnas.spaces.recurrent import RECURRENT_CORES, core_hint, detach_hidden

RESULT_FILE = "result.json"


def build_language_model(lm_cfg, ntoken: int, genotype=None) -> RNNLanguageModel:
    """The language model of the `[lm]` section around core `lm.core` (a DARTS cell takes
    `genotype`); raises ConfigError for a genotype a core cannot use."""
    if lm_cfg.emsize != lm_cfg.nhid:
        raise ConfigError(
            f"lm.emsize = {lm_cfg.emsize} and lm.nhid = {lm_cfg.nhid} must be equal: the "
            "decoder is tied to the embedding"
        )
    factory = RECURRENT_CORES.get(lm_cfg.core)
    accepted = inspect.signature(factory).parameters
    options = {}
    if "genotype" in accepted:
        options["genotype"] = genotype
    elif genotype is not None:
        raise ConfigError(
            f"lm.core = {lm_cfg.core!r} takes no genotype; drop --genotype / train.genotype, or "
            "set lm.core to the searched cell's core ('darts_rnn', 'pair_rnn')"
        )
    # The searched cells' variational dropouts; torch's LSTM/GRU cores have no such masks.
    for key in ("dropouth", "dropoutx"):
        if key in accepted:
            options[key] = getattr(lm_cfg, key)
    try:
        core = factory(lm_cfg.emsize, lm_cfg.nhid, **options)
    except ValueError as e:  # a searched cell's core rejects the genotype (or its absence)
        hint = core_hint("lm.core", lm_cfg.core, genotype)
        raise ConfigError(f"lm.core = {lm_cfg.core!r}: {e}{hint}") from None
    return RNNLanguageModel(
        ntoken, lm_cfg.emsize, core, lm_cfg.dropout, lm_cfg.dropouti, lm_cfg.dropoute
    )


@torch.no_grad()
def evaluate_lm(model: RNNLanguageModel, batches: Iterable) -> float:
    """Mean token cross-entropy over consecutive segments, hidden state carried, eval mode."""
    was_training = model.training
    model.eval()
    hidden, n, total = None, 0, 0.0
    for x, y in batches:
        logits, hidden = model(x, hidden)
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
        ).item()
        n += y.numel()
    model.train(was_training)
    return total / max(n, 1)


class LMTrainer:
    """The model, its optimiser (SGD, then ASGD), the switch trigger and the best model."""

    def __init__(self, model: RNNLanguageModel, train_cfg, lm_cfg):
        self.model, self.train_cfg, self.lm = model, train_cfg, lm_cfg
        self.asgd = False
        self.optimizer = self._make_optimizer()
        self.history: list[float] = []  # validation losses before the switch
        self.best_loss = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.switch_epoch = -1

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.train_cfg
        if self.asgd:
            return torch.optim.ASGD(
                self.model.parameters(), lr=c.lr, t0=0, lambd=0.0, weight_decay=c.weight_decay
            )
        return torch.optim.SGD(
            self.model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
        )

    def step(self, x: torch.Tensor, y: torch.Tensor, hidden):
        """One SGD/ASGD step on a segment at lr * len / bptt; (cross-entropy, next hidden)."""
        self.model.train()
        lr = self.train_cfg.lr * x.shape[0] / self.lm.bptt
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        logits, hidden, raw, dropped = self.model(x, hidden, return_h=True)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss = nll
        if self.lm.alpha_ar > 0:
            loss = loss + self.lm.alpha_ar * dropped.pow(2).mean()
        if self.lm.beta_tar > 0 and raw.shape[0] > 1:
            loss = loss + self.lm.beta_tar * (raw[1:] - raw[:-1]).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.train_cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.train_cfg.grad_clip)
        self.optimizer.step()
        return nll.item(), detach_hidden(hidden)

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The model's state with ASGD's averaged weights (the plain state before the switch)."""
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.asgd:
            for name, p in self.model.named_parameters():
                ax = self.optimizer.state.get(p, {}).get("ax")
                if ax is not None:
                    state[name] = ax.detach().clone()
        return state

    def validate(self, batches: BPTTBatches, epoch: int) -> float:
        """The epoch's validation loss (of the averaged weights after the switch); keeps the
        best model; switches to ASGD on the non-monotone trigger."""
        state = self.averaged_state()
        if self.asgd:
            current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(state)
            loss = evaluate_lm(self.model, batches.epoch())
            self.model.load_state_dict(current)
        else:
            loss = evaluate_lm(self.model, batches.epoch())
        if loss < self.best_loss:
            self.best_loss, self.best_state = loss, state
        if not self.asgd:
            n = self.lm.nonmono
            if self.lm.asgd and len(self.history) > n and loss > min(self.history[:-n]):
                self.asgd, self.switch_epoch = True, epoch
                self.optimizer = self._make_optimizer()
            self.history.append(loss)
        return loss

    def state_dict(self) -> dict:
        """Everything needed to continue exactly."""
        return {
            "model": self.model.state_dict(),
            "asgd": self.asgd,
            "optimizer": self.optimizer.state_dict(),
            "history": list(self.history),
            "best_loss": self.best_loss,
            "best_state": self.best_state,
            "switch_epoch": self.switch_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict."""
        self.model.load_state_dict(state["model"])
        self.asgd = state["asgd"]
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])
        self.best_loss, self.best_state = state["best_loss"], state["best_state"]
        self.switch_epoch = state["switch_epoch"]


def train_lm(
    cfg,
    run,
    resume: bool = False,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> dict:
    """Train (or resume) the language model of `cfg.lm` (and `cfg.train.genotype`) in run
    directory `run`; `stop_after` ends after that many epochs in all (a checkpoint, no result).
    Returns the result record (also written to `result.json` when finished)."""
    t_start = time.perf_counter()
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    dtype = getattr(torch, cfg.run.dtype)
    genotype = load_genotype(cfg.train.genotype) if cfg.train.genotype else None
    lm = cfg.lm
    seed_everything(cfg.run.seed)
    corpus = load_corpus(lm.data_dir)
    train_ids = corpus.train[: cfg.data.limit] if cfg.data.limit else corpus.train
    valid_ids = corpus.valid[: lm.valid_limit] if lm.valid_limit else corpus.valid
    train = BPTTBatches(
        batchify(train_ids, cfg.data.batch_size, "train"),
        lm.bptt,
        random_lengths=True,
        seq_len_std=lm.seq_len_std,
        max_seq_len_delta=lm.max_seq_len_delta,
        device=device,
    )
    valid = BPTTBatches(
        batchify(valid_ids, cfg.data.eval_batch_size, "valid"), lm.bptt, device=device
    )
    test = BPTTBatches(batchify(corpus.test, lm.test_batch_size, "test"), lm.bptt, device=device)
    model = build_language_model(lm, corpus.ntokens, genotype).to(device, dtype)
    trainer = LMTrainer(model, cfg.train, lm)
    params = count_params(model)
    start_epoch = 0
    if resume:
        state = resume_trainer(run, trainer, cfg.train.epochs, log)
        start_epoch = state["epoch"]
    else:
        if genotype is not None:
            run.write_genotype(genotype_to_json(genotype))
        what = f"{lm.core} of {genotype}" if genotype is not None else lm.core
        log(
            f"language model ({what}, {lm.nhid} units) on {corpus.source}: {params / 1e6:.3f}M "
            f"parameters, {corpus.ntokens} words, {len(train_ids)} training tokens"
        )
    epochs = cfg.train.epochs
    end_epoch = epochs if stop_after is None else min(stop_after, epochs)
    writer = tensorboard.open_writer(run.path, cfg.run.tensorboard)
    record: dict = {}
    for epoch in range(start_epoch, end_epoch):
        guard = NonFiniteGuard(
            cfg.run.on_nonfinite, trainer, lambda: trainer.model.parameters(), run
        )
        t0 = time.perf_counter()
        optimizer = "asgd" if trainer.asgd else "sgd"
        bar = Progress(
            train.epoch(epoch_seed(cfg.run.seed, epoch, 0)),
            len(train),
            desc=f"epoch {epoch + 1}/{epochs}",
            enabled=cfg.run.progress,
            unit="step",
        )
        hidden, loss_sum, steps = None, 0.0, 0
        for i, (x, y) in enumerate(bar):
            out = guard.run_step(
                lambda x=x, y=y, h=hidden: trainer.step(x, y, h),
                lambda out: {"train_loss": out[0]},
                f"epoch {epoch + 1}, step {i + 1}",
            )
            if out is None:
                continue  # the step was undone; the hidden state stays the one before it
            loss, hidden = out
            loss_sum, steps = loss_sum + loss, steps + 1
            bar.update(loss=loss, ppl=perplexity(loss))
        train_loss = loss_sum / max(steps, 1)
        valid_loss = trainer.validate(valid, epoch)
        record = {
            "kind": "epoch",
            "epoch": epoch,
            "lr": cfg.train.lr,
            "optimizer": optimizer,
            "train_loss": train_loss,
            "train_ppl": perplexity(train_loss),
            **guard.finish(f"epoch {epoch + 1}"),
            "valid_loss": valid_loss,
            "valid_ppl": perplexity(valid_loss),
            "best_valid_ppl": perplexity(trainer.best_loss),
            "epoch_time_s": time.perf_counter() - t0,
        }
        run.log_metrics(record)
        tensorboard.log_epoch(writer, record)
        run.save_checkpoint(
            {"trainer": trainer.state_dict(), "epoch": epoch + 1, "rng": capture_rng()}
        )
        switched = " (switching to ASGD)" if trainer.switch_epoch == epoch else ""
        log(
            f"epoch {epoch + 1}: train_ppl={record['train_ppl']:.2f} "
            f"valid_ppl={record['valid_ppl']:.2f} [{optimizer}] "
            f"({record['epoch_time_s']:.1f}s){switched}"
        )
    if end_epoch < epochs:
        return record
    # The best model by validation loss (averaged weights once ASGD has run) is the result.
    if trainer.best_state is not None:
        model.load_state_dict(trainer.best_state)
    valid_loss = evaluate_lm(model, valid.epoch())
    test_loss = evaluate_lm(model, test.epoch())
    result = {
        "genotype": str(genotype) if genotype is not None else None,
        "core": lm.core,
        "corpus": corpus.source,
        "epochs": epochs,
        "nhid": lm.nhid,
        "valid_loss": valid_loss,
        "valid_ppl": perplexity(valid_loss),
        "test_loss": test_loss,
        "test_ppl": perplexity(test_loss),
        "asgd_epoch": trainer.switch_epoch,
        "params": params,
        "train_tokens": len(train_ids),
        "wall_s_this_session": time.perf_counter() - t_start,
    }
    run.write_json(RESULT_FILE, result)
    return result
