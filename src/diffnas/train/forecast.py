"""Multivariate forecasting: forecasters, their training with model selection, exact resume.

Forecasters map an input window x [B, L, N] (L look-back rows of N series, scaled) to
[B, N] (the `lstnet` protocol's single target row) or [B, H, N] (the `long_term` protocol's H
rows). `forecast.model` names one of them (`FORECAST_MODELS`):

- any recurrent core of `diffnas.spaces.recurrent.RECURRENT_CORES` (`lstm`, `gru`, a searched
  cell such as `darts_rnn`, which gets `train.genotype`): the core reads the window, and a
  linear layer maps its output at the last time step (after dropout) to all N series (and H
  steps: one layer hidden -> H * N, a direct multi-step forecast; no decoder). With
  `forecast.channel_independent` the core reads each series alone (input size 1, the weights
  shared by the series) and the layer maps hidden -> H per series. `forecast.highway` > 0 adds
  LSTNet's autoregressive highway (default off);
- `linear`: one nn.Linear(L -> H) applied to every series, shared by them: LTSF-Linear's
  `Linear` as published (individual=False), "the" linear baseline; `forecast.individual`
  gives one map per series;
- `repeat`: the last input row repeated over the horizon; no parameters, no training.

Training (`train_forecast`, the `forecast` task): Adam or SGD on `forecast.loss` over shuffled
training windows; after every epoch the validation split is scored with the protocol's metrics
and the best epoch (lowest `protocol.select_metric`, RSE or MSE) is kept; the test split is
scored exactly once, at the end, with the best epoch's weights. The run directory gets
`metrics.jsonl` (one record per epoch with validation metrics), checkpoints after every epoch
(they hold the best weights too, so a killed run resumes exactly), and `result.json`.

The pieces the forecasting search shares with this module live below it, so search/ need not
import train/: `ForecastShape`, `RecurrentForecaster` and `predict` in
`diffnas.spaces.forecaster`, `forecast_loss` and `protocol_scores` in
`diffnas.data.forecast_metrics`, `load_forecast_data` in `diffnas.data.forecast_protocols`
(all re-exported here).
"""

from __future__ import annotations

import copy
import importlib
import math
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

from diffnas.data.forecast_metrics import forecast_loss, protocol_scores
from diffnas.data.forecast_protocols import ForecastData, Windows, load_forecast_data
from diffnas.registry import Registry
from diffnas.runs import tensorboard
from diffnas.runs.config import ConfigError
from diffnas.runs.nonfinite import NonFiniteGuard
from diffnas.runs.progress import Progress
from diffnas.runs.rng import capture_rng, seed_everything
from diffnas.runs.rundir import resume_trainer
from diffnas.runs.schedules import LR_SCHEDULES
from diffnas.spaces.forecaster import ForecastShape, RecurrentForecaster, predict
from diffnas.spaces.recurrent import RECURRENT_CORES, build_core, core_hint, takes_genotype

RESULT_FILE = "result.json"
# Modules that register searched recurrent cells when imported; absent ones are skipped.
OPTIONAL_CORE_MODULES = ("diffnas.spaces.darts_rnn", "diffnas.spaces.pair_rnn")


# ----------------------------------------------------------------------------- models


class LinearForecaster(nn.Module):
    """One linear map from the look-back window to the horizon per series (LTSF-Linear's
    Linear): shared by all series, or one per series with `individual`."""

    def __init__(self, shape: ForecastShape, individual: bool = False):
        super().__init__()
        self.shape, self.individual = shape, individual
        steps, length = shape.out_steps, shape.lookback
        if individual:
            bound = 1 / math.sqrt(length)  # nn.Linear's default init, per series
            self.weight = nn.Parameter(torch.empty(shape.n_series, steps, length))
            self.bias = nn.Parameter(torch.empty(shape.n_series, steps))
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)
        else:
            self.linear = nn.Linear(length, steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, N] -> [B, N] or [B, H, N]."""
        if self.individual:
            y = torch.einsum("bln,nsl->bsn", x, self.weight) + self.bias.t()
        else:
            y = self.linear(x.transpose(1, 2)).transpose(1, 2)
        return self.shape.finish(y)


class RepeatLast(nn.Module):
    """The last input row, repeated over the horizon (no parameters)."""

    def __init__(self, shape: ForecastShape):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, N] -> [B, N] or [B, H, N]."""
        last = x[:, -1:]
        return self.shape.finish(last.expand(-1, self.shape.out_steps, -1))


BaselineFactory = Callable[[ForecastShape, object], nn.Module]
FORECAST_BASELINES: Registry[BaselineFactory] = Registry("forecast baseline")
FORECAST_BASELINES.add("linear", lambda shape, fcfg: LinearForecaster(shape, fcfg.individual))
FORECAST_BASELINES.add("repeat", lambda shape, fcfg: RepeatLast(shape))


def _import_optional_cores() -> None:
    for module in OPTIONAL_CORE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            # Only "this module does not exist yet" is soft; a broken import inside is a bug.
            if e.name != module:
                raise


class ForecastModels:
    """The forecaster names: the baselines plus every registered recurrent core."""

    def names(self) -> list[str]:
        """All names `forecast.model` accepts, sorted."""
        _import_optional_cores()
        return sorted({*FORECAST_BASELINES.names(), *RECURRENT_CORES.names()})

    def __contains__(self, name: object) -> bool:
        return name in self.names()


FORECAST_MODELS = ForecastModels()


def build_forecaster(fcfg, shape: ForecastShape, genotype=None) -> nn.Module:
    """The forecaster `fcfg.model` (a baseline, or a recurrent core with the output layer)."""
    _import_optional_cores()
    name = fcfg.model
    if name in FORECAST_BASELINES:
        if genotype is not None:
            raise ConfigError(
                f"train.genotype is set, but forecast.model = {name!r} takes no genotype; "
                "set forecast.model to the searched cell's core (e.g. darts_rnn)"
            )
        return FORECAST_BASELINES.get(name)(shape, fcfg)
    options = {}
    if takes_genotype(name):
        if genotype is None:
            raise ConfigError(
                f"forecast.model = {name!r} is a searched cell: set train.genotype (or pass "
                "--genotype RUN_DIR_OR_FILE)"
            )
        options["genotype"] = genotype
    elif genotype is not None:
        raise ConfigError(
            f"train.genotype is set, but forecast.model = {name!r} takes no genotype; set "
            "forecast.model to the searched cell's core (darts_rnn, pair_rnn), or drop the "
            "genotype"
        )
    in_size = 1 if fcfg.channel_independent else shape.n_series
    try:
        core = build_core(name, in_size, fcfg.hidden, **options)
    except ValueError as e:  # a searched cell's core rejects the genotype
        hint = core_hint("forecast.model", name, genotype)
        raise ConfigError(f"forecast.model = {name!r}: {e}{hint}") from None
    return RecurrentForecaster(
        core, shape, fcfg.hidden, fcfg.dropout, fcfg.highway, fcfg.channel_independent
    )


# ----------------------------------------------------------------------------- training pieces


# train/ must not depend on search/, so these two small helpers live here.
def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device = 'cuda' but no CUDA device is available; use 'cpu'")
    return torch.device(name)


def epoch_seed(seed: int, epoch: int) -> int:
    """The reproducible seed of epoch `epoch`'s shuffling of the training windows."""
    return (seed * 1_000_003 + epoch * 7) % 2**63


OPTIMIZERS: Registry = Registry("optimizer")
OPTIMIZERS.add(
    "adam", lambda params, t: torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
)
OPTIMIZERS.add(
    "sgd",
    lambda params, t: torch.optim.SGD(
        params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    ),
)



def train_batches(
    windows: Windows, batch_size: int, seed: int, epoch: int, limit: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Epoch `epoch`'s shuffled training batches (a random subset of `limit` windows if > 0);
    the order depends only on (seed, epoch), so a resumed run sees the same batches."""
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return windows.batches(batch_size, g, limit)


def evaluate_split(
    model: nn.Module, data: ForecastData, split: str, batch_size: int, loss: str = "mse"
) -> dict[str, float]:
    """{`loss`, each protocol metric} of `model` on one split (no gradients)."""
    pred, target = predict(model, data.splits[split], batch_size)
    return {"loss": forecast_loss(pred, target, loss).item(), **protocol_scores(data, pred, target)}


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class ForecastTrainer:
    """A forecaster, its optimiser (None for parameter-free baselines) and one training step."""

    def __init__(self, model: nn.Module, cfg):
        self.model, self.cfg = model, cfg
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = (
            OPTIMIZERS.get(cfg.forecast.optimizer)(params, cfg.train) if params else None
        )

    @property
    def trainable(self) -> bool:
        """False for baselines without parameters (repeat-last)."""
        return self.optimizer is not None

    def start_epoch(self, epoch: int) -> dict[str, float]:
        """Set the epoch's learning rate from `forecast.lr_schedule`."""
        t = self.cfg.train
        lr = LR_SCHEDULES.get(self.cfg.forecast.lr_schedule)(epoch, t)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return {"lr": lr}

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimiser step on a batch; returns its loss."""
        self.model.train()
        loss = forecast_loss(self.model(x), y, self.cfg.forecast.loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        return loss.item()

    def state_dict(self) -> dict:
        """Everything needed to continue exactly."""
        opt = self.optimizer.state_dict() if self.optimizer else {}
        return {"model": self.model.state_dict(), "optimizer": opt}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict."""
        self.model.load_state_dict(state["model"])
        if self.optimizer:
            self.optimizer.load_state_dict(state["optimizer"])


# ----------------------------------------------------------------------------- the task


def _load_genotype(cfg):
    """`train.genotype` loaded, or None when it is empty."""
    if not cfg.train.genotype:
        return None
    from diffnas.spaces.genotypes import load_genotype

    return load_genotype(cfg.train.genotype)


def _prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def train_forecast(
    cfg,
    run,
    resume: bool = False,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> dict:
    """Train (or resume) the forecaster of `cfg.forecast` in run directory `run`.

    `stop_after` ends the run after that many epochs in all (a checkpoint, no result), to be
    resumed later. Returns the result record (also written to `result.json` when finished);
    resuming a finished run returns its result without scoring the test split again.
    """
    t_start = time.perf_counter()
    if resume and (run.path / RESULT_FILE).is_file():
        import json

        return json.loads((run.path / RESULT_FILE).read_text())
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    dtype = getattr(torch, cfg.run.dtype)
    f = cfg.forecast
    seed_everything(cfg.run.seed)
    data = load_forecast_data(cfg, device, dtype)
    shape = ForecastShape(data.n_series, f.lookback, f.horizon, data.protocol.single_step)
    genotype = _load_genotype(cfg)
    model = build_forecaster(f, shape, genotype).to(device, dtype)
    trainer = ForecastTrainer(model, cfg)
    params = count_params(model)
    batch, eval_batch = cfg.data.batch_size, cfg.data.eval_batch_size
    train_split = data.splits["train"]
    select = data.protocol.select_metric
    start_epoch, best, bad_epochs, stopped = 0, None, 0, False
    if resume:
        state = resume_trainer(run, trainer, cfg.train.epochs, log, map_location=device)
        start_epoch, best = state["epoch"], state["best"]
        bad_epochs, stopped = state["bad_epochs"], state["stopped"]
    else:
        if genotype is not None:
            from diffnas.spaces.genotypes import genotype_to_json

            run.write_genotype(genotype_to_json(genotype))
        sizes = ", ".join(f"{k} {len(w)}" for k, w in data.splits.items())
        log(
            f"{f.model} forecaster on {f.path} ({data.n_series} series, {f.protocol} protocol, "
            f"look-back {f.lookback}, horizon {f.horizon}): {params:,} parameters; windows: "
            f"{sizes}"
        )
    epochs = cfg.train.epochs if trainer.trainable else 0
    end_epoch = epochs if stop_after is None else min(stop_after, epochs)
    writer = tensorboard.open_writer(run.path, cfg.run.tensorboard)
    record: dict = {}
    if not trainer.trainable and best is None:
        # Nothing to fit: score validation once, as the model selection would have.
        val = evaluate_split(model, data, "val", eval_batch, f.loss)
        record = {"kind": "eval", "epoch": 0, **_prefixed("val", val)}
        run.log_metrics(record)
        best = {"model": copy.deepcopy(model.state_dict()), "epoch": -1, "val": val}
        run.save_checkpoint(
            {
                "trainer": trainer.state_dict(),
                "best": best,
                "epoch": 0,
                "bad_epochs": 0,
                "stopped": False,
                "rng": capture_rng(),
            }
        )
    for epoch in range(start_epoch, end_epoch):
        guard = NonFiniteGuard(
            cfg.run.on_nonfinite, trainer, lambda: trainer.model.parameters(), run
        )
        if stopped:
            break
        t0 = time.perf_counter()
        schedule = trainer.start_epoch(epoch)
        n_batches = train_split.num_batches(batch, f.train_windows)
        bar = Progress(
            train_batches(train_split, batch, cfg.run.seed, epoch, f.train_windows),
            n_batches,
            desc=f"epoch {epoch + 1}/{epochs}",
            enabled=cfg.run.progress,
            unit="step",
        )
        loss_sum = 0.0
        for i, (x, y) in enumerate(bar):
            loss = guard.run_step(
                lambda x=x, y=y: trainer.step(x, y),
                lambda loss: {"train_loss": loss},
                f"epoch {epoch + 1}, step {i + 1}",
            )
            if loss is None:
                continue
            loss_sum += loss
            bar.update(loss=loss)
        val = evaluate_split(model, data, "val", eval_batch, f.loss)
        improved = best is None or val[select] < best["val"][select]
        if improved:
            best = {"model": copy.deepcopy(model.state_dict()), "epoch": epoch, "val": val}
            bad_epochs = 0
        else:
            bad_epochs += 1
        stopped = bool(f.patience) and bad_epochs >= f.patience
        record = {
            "kind": "epoch",
            "epoch": epoch,
            **schedule,
            "train_loss": loss_sum / max(guard.done, 1),
            **guard.finish(f"epoch {epoch + 1}"),
            **_prefixed("val", val),
            "best_epoch": best["epoch"],
            "epoch_time_s": time.perf_counter() - t0,
        }
        run.log_metrics(record)
        tensorboard.log_epoch(writer, record)
        run.save_checkpoint(
            {
                "trainer": trainer.state_dict(),
                "best": best,
                "epoch": epoch + 1,
                "bad_epochs": bad_epochs,
                "stopped": stopped,
                "rng": capture_rng(),
            }
        )
        log(
            f"epoch {epoch + 1}: train_loss={record['train_loss']:.5f} "
            + " ".join(f"val_{k}={v:.5f}" for k, v in val.items())
            + (" *" if improved else "")
            + f" ({record['epoch_time_s']:.1f}s)"
            + (f"; no better validation for {bad_epochs} epochs, stopping" if stopped else "")
        )
    if end_epoch < epochs and not stopped:
        return record
    # The test split is touched here, once, with the weights of the best validation epoch.
    model.load_state_dict(best["model"])
    pred, target = predict(model, data.splits["test"], eval_batch)
    test = {
        "loss": forecast_loss(pred, target, f.loss).item(),
        **protocol_scores(data, pred, target),
    }
    result = {
        "task": "forecast",
        "model": f.model,
        "genotype": str(genotype) if genotype is not None else "",
        "path": f.path,
        "protocol": f.protocol,
        "lookback": f.lookback,
        "horizon": f.horizon,
        "scale": f.scale if f.protocol == "lstnet" else "zscore-train",
        "n_series": data.n_series,
        "windows": {k: len(w) for k, w in data.splits.items()},
        "epochs": epochs,
        "epochs_run": len([r for r in run.read_metrics() if r.get("kind") == "epoch"]),
        "stopped_early": stopped,
        "best_epoch": best["epoch"],
        **_prefixed("val", best["val"]),
        **_prefixed("test", test),
        "params": params,
    }
    if f.drop_last_batch:
        kept = len(pred) // f.drop_last_batch * f.drop_last_batch
        if kept:
            part = protocol_scores(data, pred[:kept], target[:kept])
            result.update({f"drop_last_test_{k}": v for k, v in part.items()})
            result["drop_last_windows"] = kept
    result["wall_s_this_session"] = time.perf_counter() - t_start
    run.write_json(RESULT_FILE, result)
    return result
