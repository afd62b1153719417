"""The DARTS RNN search on forecasting: `search.task = forecast`, the forecast objective, exact
resume, the test split never read, the search splits, and training the found cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffnas.cli import main
from diffnas.data import forecast_protocols as fp
from diffnas.data.forecast_protocols import load_forecast_data
from diffnas.runs.config import ConfigError, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import build_search, run_search
from diffnas.spaces.darts_rnn import DartsRNNForecastSuperNet
from diffnas.spaces.forecaster import ForecastShape
from diffnas.spaces.genotypes import load_genotype
from diffnas.train.forecast import build_forecaster

CONFIG = "configs/darts_rnn_forecast.toml"
QUIET = ["run.progress=false", "run.threads=1", "run.tensorboard=false"]


def write_series(path: Path, rows: int = 240, cols: int = 3, seed: int = 0) -> Path:
    """A small LSTNet-format file: noisy sines of different periods."""
    g = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    values = (
        2 + np.sin(2 * np.pi * t / (8 + 3 * np.arange(cols))) + 0.1 * g.normal(size=(rows, cols))
    )
    path.write_text("\n".join(",".join(f"{v:.5f}" for v in r) for r in values) + "\n")
    return path


def tiny(series: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"forecast.path={series}",
        "forecast.lookback=12",
        "forecast.horizon=3",
        "forecast.hidden=6",
        "forecast.train_windows=48",
        "space.steps=3",
        "data.batch_size=16",
        "data.eval_batch_size=64",
        "search.epochs=2",
        "search.w_lr=0.2",
        "run.seed=1",
        "run.log_every=1",
        f"run.out={out}",
        *QUIET,
        *extra,
    ]


@pytest.fixture
def series(tmp_path) -> Path:
    return write_series(tmp_path / "series.txt")


@pytest.fixture
def origins(monkeypatch) -> list[int]:
    """Every window origin any batch is gathered from."""
    seen: list[int] = []
    real = fp.Windows.batch

    def batch(self, o):
        seen.extend(o.tolist())
        return real(self, o)

    monkeypatch.setattr(fp.Windows, "batch", batch)
    return seen


def _search(series, out, *extra, stop_after=None, resume=False, log=None):
    cfg = load_config(CONFIG, tiny(series, out, *extra))
    run = RunDir.open_existing(out) if resume else RunDir(out).create(cfg)
    if resume:
        cfg = run.read_config()
    return run_search(cfg, run, resume=resume, log=log or (lambda s: None), stop_after=stop_after)


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("time", "epoch_time_s")} for r in records]


def _alphas(out: Path) -> dict[str, torch.Tensor]:
    arch = RunDir(out).load_checkpoint()["strategy"]["arch"]
    return {k: v for k, v in arch.items() if k.startswith("alphas_")}


def test_search_logs_resumes_exactly_and_never_reads_the_test_split(series, tmp_path, origins):
    """2 first-order epochs: the val metrics logged every epoch; a run stopped after 1 epoch and
    resumed equals the uninterrupted one; no batch ever comes from the test split."""
    lines: list[str] = []
    g_full = _search(series, tmp_path / "full", log=lines.append)
    _search(series, tmp_path / "cut", stop_after=1)
    g_cut = _search(series, tmp_path / "cut", resume=True)
    assert g_full == g_cut and len(g_full.recurrent) == 3

    full = _strip(RunDir(tmp_path / "full").read_metrics())
    assert full == _strip(RunDir(tmp_path / "cut").read_metrics())
    a, b = _alphas(tmp_path / "full"), _alphas(tmp_path / "cut")
    assert a.keys() == {"alphas_rnn"} and all(torch.equal(a[k], b[k]) for k in a)
    epochs = [r for r in full if r["kind"] == "epoch"]
    assert len(epochs) == 2
    for r in epochs:
        for key in ("train_loss", "train_rse", "val_loss", "valid_loss", "valid_rse", "valid_corr"):
            assert np.isfinite(r[key]), key
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]  # the weights learn
    assert sum("valid_rse=" in s for s in lines) == 2
    weights = [
        json.loads(x)["genotype"]["weights"]
        for x in (tmp_path / "full" / "genotypes.jsonl").read_text().splitlines()
    ]
    assert weights[0] != weights[1]  # the alphas moved

    cfg = load_config(CONFIG, tiny(series, tmp_path / "x"))
    data = load_forecast_data(cfg, torch.device("cpu"), torch.float32)
    test, val = data.splits["test"], data.splits["val"]
    assert origins and max(origins) < test.start
    assert any(val.start <= o < val.end for o in origins)  # the alphas read validation


def test_second_order_epoch(series, tmp_path, origins):
    """One second-order epoch: finite metrics, the alphas move, still no test window."""
    out = tmp_path / "so"
    genotype = _search(series, out, "search.order=2", "search.epochs=1")
    (record,) = [r for r in RunDir(out).read_metrics() if r["kind"] == "epoch"]
    assert np.isfinite(record["val_loss"]) and np.isfinite(record["valid_rse"])
    assert not torch.allclose(_alphas(out)["alphas_rnn"], torch.zeros(6, 5), atol=1e-3)
    assert len(genotype.recurrent) == 3
    cfg = load_config(CONFIG, tiny(series, tmp_path / "x"))
    data = load_forecast_data(cfg, torch.device("cpu"), torch.float32)
    assert max(origins) < data.splits["test"].start


def test_train_split_keeps_validation_unseen(series, tmp_path, origins):
    """`forecast.search_split = train`: the alphas read the later training windows, and neither
    the validation nor the test split is touched; the long_term protocol scores MSE/MAE."""
    out = tmp_path / "half"
    extra = ("forecast.search_split=train", "search.epochs=1", "forecast.protocol=long_term")
    _search(series, out, *extra)
    (record,) = [r for r in RunDir(out).read_metrics() if r["kind"] == "epoch"]
    assert {"valid_mse", "valid_mae", "train_mse"} <= record.keys()
    cfg = load_config(CONFIG, tiny(series, tmp_path / "x", *extra))
    data = load_forecast_data(cfg, torch.device("cpu"), torch.float32)
    train = data.splits["train"]
    assert max(origins) < train.end
    mid = train.start + len(train) // 2
    assert any(o >= mid for o in origins) and any(o < mid for o in origins)


def test_supernet_is_the_final_forecaster_and_windows_start_from_zero(series, tmp_path):
    """With the derived genotype's one-hot weights (no search BN) the supernet equals the final
    `darts_rnn` forecaster with the same weights; each window starts from the zero state, so a
    batch predicts as its windows one by one."""
    torch.manual_seed(0)
    shape = ForecastShape(3, 10, 2, single_step=False)
    net = DartsRNNForecastSuperNet(shape, 5, steps=4, batch_norm=False).double()
    alphas = {"rnn": torch.randn(*net.arch_shapes()["rnn"], dtype=torch.float64)}
    genotype = net.genotype(alphas)
    cfg = load_config(None, ["forecast.model=darts_rnn", "forecast.hidden=5"])
    final = build_forecaster(cfg.forecast, shape, genotype).double()
    final.load_state_dict(net.state_dict())
    net.eval(), final.eval()
    x = torch.randn(4, 10, 3, dtype=torch.float64)
    torch.testing.assert_close(net(x, net.project(alphas)), final(x))
    soft = {"rnn": alphas["rnn"].softmax(-1)}
    one_by_one = torch.cat([net(x[i : i + 1], soft) for i in range(4)])
    torch.testing.assert_close(net(x, soft), one_by_one)


def test_found_cell_trains_with_diffnas_train(series, tmp_path, capsys):
    """`diffnas train --task forecast --genotype RUN_DIR --set forecast.model=darts_rnn`."""
    out = tmp_path / "s"
    genotype = _search(series, out, "search.epochs=1")
    sets = [
        f"forecast.path={series}",
        "forecast.lookback=12",
        "forecast.horizon=3",
        "forecast.hidden=6",
        "forecast.train_windows=32",
        "forecast.model=darts_rnn",
        "train.epochs=1",
        *QUIET,
    ]
    args = ["train", "--task", "forecast", "--genotype", str(out), "--out", str(tmp_path / "t")]
    assert main([*args, *[f"--set={s}" for s in sets]]) == 0
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    assert result["model"] == "darts_rnn" and np.isfinite(result["test_rse"])
    assert load_genotype(str(tmp_path / "t")) == genotype


def test_task_and_path_errors(series, tmp_path):
    with pytest.raises(ConfigError, match="search.task"):
        load_config(None, ["search.task=bogus"])
    cfg = load_config(None, ["search.task=forecast", 'space.name="nb201"', *QUIET])
    with pytest.raises(ConfigError, match="search.task = 'forecast'.*'nb201'"):
        build_search(cfg)
    cfg = load_config(CONFIG, QUIET)
    with pytest.raises(ConfigError, match="forecast.path"):
        build_search(cfg)
    cfg = load_config(CONFIG, tiny(series, tmp_path / "x", "forecast.search_split=train"))
    cfg.data.train_portion = 0.001
    with pytest.raises(Exception, match="train_portion"):
        build_search(cfg)
