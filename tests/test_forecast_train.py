"""Forecasters and the `forecast` training task: shapes, baselines, model selection on
validation, the test split scored once, exact resume, the command and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffnas.cli import main
from diffnas.runs.config import ConfigError, ForecastConfig, load_config
from diffnas.runs.rundir import RunDir
from diffnas.train import TASKS
from diffnas.train import forecast as fc
from diffnas.train.forecast import (
    FORECAST_MODELS,
    ForecastShape,
    LinearForecaster,
    RepeatLast,
    build_forecaster,
    evaluate_split,
    load_forecast_data,
    train_forecast,
)

QUIET = ["run.progress=false", "run.threads=1", "run.tensorboard=false"]


def write_series(path: Path, rows: int = 260, cols: int = 3, seed: int = 0) -> Path:
    """A small LSTNet-format file: noisy sines of different periods."""
    g = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    values = (
        2 + np.sin(2 * np.pi * t / (8 + 3 * np.arange(cols))) + 0.1 * g.normal(size=(rows, cols))
    )
    path.write_text("\n".join(",".join(f"{v:.5f}" for v in r) for r in values) + "\n")
    return path


def _cfg(tmp_path: Path, out: str, *extra: str, epochs: int = 3):
    data = tmp_path / "series.txt"
    if not data.exists():
        write_series(data)
    return load_config(
        None,
        [
            "train.task=forecast",
            f"train.epochs={epochs}",
            "train.lr=0.01",
            "train.weight_decay=0",
            "data.batch_size=32",
            "data.eval_batch_size=64",
            f"forecast.path={data}",
            "forecast.lookback=16",
            "forecast.horizon=3",
            "forecast.hidden=8",
            "forecast.train_windows=64",
            f"run.out={tmp_path / out}",
            *QUIET,
            *extra,
        ],
    )


def _strip_times(records):
    return [{k: v for k, v in r.items() if k not in ("time", "epoch_time_s")} for r in records]


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("single_step", [True, False])
@pytest.mark.parametrize(
    "model,extra",
    [
        ("gru", {}),
        ("lstm", {"highway": 4}),
        ("gru", {"channel_independent": True, "highway": 2}),
        ("linear", {}),
        ("linear", {"individual": True}),
        ("repeat", {}),
    ],
)
def test_forecasters_predict_the_protocols_target_shape(single_step, model, extra):
    shape = ForecastShape(n_series=3, lookback=10, horizon=4, single_step=single_step)
    net = build_forecaster(ForecastConfig(model=model, hidden=6, **extra), shape)
    y = net(torch.randn(5, 10, 3))
    assert y.shape == ((5, 3) if single_step else (5, 4, 3))
    if model != "repeat":
        y.sum().backward()
        assert all(p.grad is not None for p in net.parameters())


def test_linear_baseline_is_one_map_per_window_shared_or_individual():
    shape = ForecastShape(3, 6, 2, single_step=False)
    x = torch.randn(4, 6, 3)
    shared = LinearForecaster(shape)
    assert sum(p.numel() for p in shared.parameters()) == 6 * 2 + 2
    for i in range(3):  # every series goes through the same map
        torch.testing.assert_close(shared(x)[:, :, i], shared.linear(x[:, :, i]))
    ind = LinearForecaster(shape, individual=True)
    assert sum(p.numel() for p in ind.parameters()) == 3 * (6 * 2 + 2)
    for i in range(3):
        want = x[:, :, i] @ ind.weight[i].t() + ind.bias[i]
        torch.testing.assert_close(ind(x)[:, :, i], want)


def test_repeat_last_value_and_model_registry():
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(RepeatLast(ForecastShape(3, 5, 1, True))(x), x[:, -1])
    multi = RepeatLast(ForecastShape(3, 5, 4, False))(x)
    assert torch.equal(multi, x[:, -1:].expand(2, 4, 3))
    assert {"lstm", "gru", "linear", "repeat"} <= set(FORECAST_MODELS.names())
    assert "forecast" in TASKS


def test_a_searched_cell_core_gets_the_genotype():
    if "darts_rnn" not in FORECAST_MODELS.names():
        pytest.skip("no darts_rnn core registered")
    from diffnas.spaces.genotypes import load_genotype

    shape = ForecastShape(3, 8, 5, single_step=False)
    f = ForecastConfig(model="darts_rnn", hidden=6)
    with pytest.raises(ConfigError, match="set train.genotype"):
        build_forecaster(f, shape)
    net = build_forecaster(f, shape, genotype=load_genotype("DARTS_RNN_V2"))
    assert net(torch.randn(2, 8, 3)).shape == (2, 5, 3)


def test_lr_schedules():
    from diffnas.runs.config import TrainConfig
    from diffnas.runs.schedules import LR_SCHEDULES

    get = LR_SCHEDULES.get
    t = TrainConfig(epochs=10, lr=0.008, lr_min=0.0, lr_decay=0.97)
    assert [get("halve")(e, t) for e in range(4)] == [0.008, 0.004, 0.002, 0.001]
    assert get("exponential")(2, t) == pytest.approx(0.008 * 0.97**2)
    assert get("constant")(7, t) == 0.008
    assert get("cosine")(0, t) == 0.008 and get("cosine")(10, t) == 0.0


def test_genotype_mismatch_is_a_config_error():
    shape = ForecastShape(2, 4, 1, True)
    with pytest.raises(ConfigError, match="takes no genotype"):
        build_forecaster(ForecastConfig(model="gru"), shape, genotype=object())
    with pytest.raises(ConfigError, match="highway = 9"):
        build_forecaster(ForecastConfig(model="gru", highway=9), shape)


# ----------------------------------------------------------------------------- training


def test_resume_equals_uninterrupted_and_the_best_epoch_is_tested(tmp_path, monkeypatch):
    full = RunDir(tmp_path / "full").create(_cfg(tmp_path, "full"))
    calls = []
    real_predict = fc.predict

    def counting_predict(model, windows, *a, **kw):
        calls.append(windows.start)
        return real_predict(model, windows, *a, **kw)

    monkeypatch.setattr(fc, "predict", counting_predict)
    result = train_forecast(full.read_config(), full, log=lambda s: None)
    data = load_forecast_data(full.read_config(), torch.device("cpu"), torch.float32)
    test_start = data.splits["test"].start
    # Validation after every epoch, the test split exactly once, at the very end.
    assert calls.count(test_start) == 1 and calls[-1] == test_start and len(calls) == 4
    monkeypatch.setattr(fc, "predict", real_predict)

    part = RunDir(tmp_path / "part").create(_cfg(tmp_path, "part"))
    train_forecast(part.read_config(), part, log=lambda s: None, stop_after=1)
    assert not (part.path / "result.json").exists()
    resumed = train_forecast(part.read_config(), part, resume=True, log=lambda s: None)
    assert _strip_times(full.read_metrics()) == _strip_times(part.read_metrics())
    for k in ("test_rse", "test_corr", "val_rse", "best_epoch", "params"):
        assert resumed[k] == result[k]
    a, b = full.load_checkpoint()["best"]["model"], part.load_checkpoint()["best"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Model selection: the best epoch has the lowest validation RSE, and the test metrics are
    # those of its weights.
    records = full.read_metrics()
    rses = [r["val_rse"] for r in records]
    assert result["best_epoch"] == int(np.argmin(rses)) and result["val_rse"] == min(rses)
    model = build_forecaster(full.read_config().forecast, ForecastShape(3, 16, 3, True))
    model.load_state_dict(a)
    again = evaluate_split(model, data, "test", 64, "mse")
    assert again["rse"] == pytest.approx(result["test_rse"], rel=1e-6)
    assert again["corr"] == pytest.approx(result["test_corr"], rel=1e-6)
    # Resuming a finished run returns its result without scoring the test split again.
    calls.clear()
    monkeypatch.setattr(fc, "predict", counting_predict)
    assert train_forecast(full.read_config(), full, resume=True, log=lambda s: None) == json.loads(
        (full.path / "result.json").read_text()
    )
    assert calls == []


def test_long_term_training_and_early_stopping(tmp_path):
    # lr 0: validation never improves after the first epoch, so patience 1 stops after two.
    cfg = _cfg(
        tmp_path,
        "lt",
        "forecast.protocol=long_term",
        "forecast.horizon=6",
        "forecast.model=linear",
        "forecast.patience=1",
        "forecast.drop_last_batch=16",
        "train.lr=0",
        epochs=5,
    )
    run = RunDir(cfg.run.out).create(cfg)
    result = train_forecast(cfg, run, log=lambda s: None)
    assert result["stopped_early"] and result["epochs_run"] == 2 and result["best_epoch"] == 0
    assert {"test_mse", "test_mae", "val_mse", "drop_last_test_mse"} <= set(result)
    n_test = result["windows"]["test"]
    assert result["drop_last_windows"] == n_test // 16 * 16
    assert result["windows"]["test"] == 260 - (int(260 * 0.7) + 26) - 6 + 1


def test_repeat_baseline_needs_no_training(tmp_path):
    cfg = _cfg(tmp_path, "rep", "forecast.model=repeat")
    run = RunDir(cfg.run.out).create(cfg)
    result = train_forecast(cfg, run, log=lambda s: None)
    assert result["params"] == 0 and result["epochs_run"] == 0
    # The LSTNet protocol scores in original units: RSE against the raw file by hand.
    raw = np.loadtxt(tmp_path / "series.txt", delimiter=",")
    n, L, h = len(raw), 16, 3
    targets = np.arange(int(0.8 * n), n)
    pred, true = raw[targets - h], raw[targets]
    expected = np.sqrt(((pred - true) ** 2).sum()) / np.sqrt(((true - true.mean()) ** 2).sum())
    assert result["test_rse"] == pytest.approx(expected, rel=1e-5)
    assert L < targets[0]


def test_train_command_uses_the_forecast_recipe(tmp_path, capsys):
    data = write_series(tmp_path / "s.txt")
    out = tmp_path / "cmd"
    args = ["train", "--task", "forecast", "--out", str(out)]
    sets = [f"forecast.path={data}", "train.epochs=1", "forecast.lookback=12", *QUIET]
    sets += ["forecast.hidden=4", "forecast.train_windows=32"]
    assert main([*args, *sum((["--set", s] for s in sets), [])]) == 0
    assert "test_rse" in capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert result["protocol"] == "lstnet" and result["horizon"] == 24 and result["model"] == "gru"
    cfg = RunDir(out).read_config()
    assert cfg.train.lr == 0.001 and cfg.forecast.loss == "l1" and cfg.data.batch_size == 128
    assert [r["kind"] for r in RunDir(out).read_metrics()] == ["epoch"]


def test_train_command_errors(tmp_path, capsys):
    base = ["train", "--task", "forecast", "--out", str(tmp_path / "e")]
    assert main(base) == 2
    assert "forecast.path is empty" in capsys.readouterr().err
    assert main([*base, "--set", "forecast.protocol=lstnett"]) == 2
    err = capsys.readouterr().err
    assert "forecast.protocol" in err and "long_term" in err and "did you mean 'lstnet'" in err
    missing = tmp_path / "none.txt"
    assert main([*base, "--set", f"forecast.path={missing}", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "none.txt.gz" in err and "forecast.path" in err
