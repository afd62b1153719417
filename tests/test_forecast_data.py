"""Forecasting data: metrics on hand-made arrays, the series loaders and their errors, the two
protocols' splits, scalers and windows."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from diffnas.data import DataFormatError, DataNotFoundError
from diffnas.data import images as images_mod
from diffnas.data.forecast_metrics import FORECAST_METRICS, corr, mae, mse, rse
from diffnas.data.forecast_protocols import (
    FORECAST_PROTOCOLS,
    long_term_borders,
    prepare_forecast,
)
from diffnas.data.series import SERIES_FORMATS, Series, load_series


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(images_mod.DATA_ENV, raising=False)


# ----------------------------------------------------------------------------- metrics


def test_mse_mae_on_hand_made_arrays():
    pred = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    target = torch.tensor([[1.0, 4.0], [0.0, 5.0]])
    # errors 0, -2, 3, 0
    assert mse(pred, target) == pytest.approx((0 + 4 + 9 + 0) / 4)
    assert mae(pred, target) == pytest.approx((0 + 2 + 3 + 0) / 4)
    assert set(FORECAST_METRICS.names()) == {"rse", "corr", "mse", "mae"}


def test_rse_is_lstnets_formula():
    target = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # pooled mean 3
    pred = torch.tensor([[2.0, 2.0], [3.0, 4.0]])  # errors 1, 0, 0, 2
    expected = math.sqrt(1 + 4) / math.sqrt(4 + 1 + 0 + 9)
    assert rse(pred, target) == pytest.approx(expected)
    # The LSTNet code's form: sqrt(SSE / n) / population std of all targets pooled.
    g = np.random.default_rng(0)
    t, p = g.normal(size=(50, 4)), g.normal(size=(50, 4))
    lstnet = math.sqrt(((t - p) ** 2).sum() / t.size) / t.std()
    assert rse(torch.from_numpy(p), torch.from_numpy(t)) == pytest.approx(lstnet)
    assert rse(torch.from_numpy(t), torch.from_numpy(t)) == 0.0


def test_corr_averages_pearson_per_series_and_skips_constant_targets():
    target = torch.tensor([[1.0, 5.0, 7.0], [2.0, 5.0, 8.0], [3.0, 5.0, 9.0], [4.0, 5.0, 7.0]])
    pred = torch.tensor([[2.0, 1.0, 1.0], [4.0, 2.0, 1.0], [6.0, 3.0, 1.0], [8.0, 4.0, 1.0]])
    # Series 0: perfectly correlated (1); series 1: constant target, skipped; series 2:
    # constant prediction of a varying target, 0.
    assert corr(pred, target) == pytest.approx(0.5)
    assert corr(-pred[:, :1], target[:, :1]) == pytest.approx(-1.0)
    g = np.random.default_rng(1)
    t, p = g.normal(size=(30, 3)), g.normal(size=(30, 3))
    expected = np.mean([np.corrcoef(p[:, i], t[:, i])[0, 1] for i in range(3)])
    assert corr(torch.from_numpy(p), torch.from_numpy(t)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="differ"):
        corr(pred, target[:, :2])


# ----------------------------------------------------------------------------- loaders


def _matrix(rows=40, cols=3, seed=0) -> np.ndarray:
    return np.round(np.random.default_rng(seed).uniform(-5, 5, (rows, cols)), 6)


def write_ett(path: Path, values: np.ndarray, step_minutes: int = 60) -> Path:
    """An ETT-format csv: `date` then one column per series."""
    names = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"][: values.shape[1]]
    lines = ["date," + ",".join(names)]
    t0 = np.datetime64("2016-07-01T00:00")
    for i, row in enumerate(values):
        stamp = str(t0 + np.timedelta64(i * step_minutes, "m")).replace("T", " ") + ":00"
        lines.append(stamp + "," + ",".join(repr(float(v)) for v in row))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_lstnet(path: Path, values: np.ndarray) -> Path:
    """An LSTNet matrix: no header, comma-separated; gzipped when the name ends in .gz."""
    text = "\n".join(",".join(f"{v:.6f}" for v in row) for row in values) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_ett_loader_reads_values_names_and_step(tmp_path):
    values = _matrix(30, 7)
    s = load_series(write_ett(tmp_path / "ETTh1.csv", values), "ett")
    assert s.columns == ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
    np.testing.assert_array_equal(s.values, values)
    assert s.step_s == 3600 and s.format == "ett" and len(s) == 30
    s = load_series(write_ett(tmp_path / "ETTm1.csv", values, 15), "ett", columns=["OT", "1"])
    assert s.step_s == 900 and s.columns == ("OT", "HUFL")
    np.testing.assert_array_equal(s.values, values[:, [6, 0]])


def test_lstnet_loader_txt_and_gz_and_the_gz_fallback(tmp_path):
    values = _matrix(25, 4)
    plain = load_series(write_lstnet(tmp_path / "a.txt", values), "lstnet")
    np.testing.assert_allclose(plain.values, values)
    write_lstnet(tmp_path / "b.txt.gz", values)
    gz = load_series(tmp_path / "b.txt", "lstnet")  # found as b.txt.gz
    np.testing.assert_array_equal(gz.values, plain.values)
    assert gz.path.name == "b.txt.gz" and gz.columns == ("0", "1", "2", "3")
    two = load_series(tmp_path / "a.txt", "lstnet", columns=["3", "1"])
    np.testing.assert_allclose(two.values, values[:, [3, 1]])


def test_csv_loader_columns_by_name_or_index(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("when,a,b,c\n2020-01-01,1,2,3\n2020-01-02,4,5,6\n2020-01-03,7,8,9\n")
    s = load_series(path, "csv", date_column="when")
    assert s.columns == ("a", "b", "c") and s.step_s == 86400
    np.testing.assert_array_equal(s.values[:, 2], [3, 6, 9])
    s = load_series(path, "csv", columns=["c", "1"], date_column="when")
    assert s.columns == ("c", "a")
    np.testing.assert_array_equal(s.values, [[3, 1], [6, 4], [9, 7]])
    with pytest.raises(DataFormatError, match=r"no column 'zz'.*when, a, b, c"):
        load_series(path, "csv", columns=["zz"], date_column="when")
    with pytest.raises(DataFormatError, match="holds dates"):
        load_series(path, "csv", columns=["when"], date_column="when")
    assert set(SERIES_FORMATS.names()) == {"ett", "lstnet", "csv"}


@pytest.mark.parametrize(
    ("fmt", "text", "pattern"),
    [
        ("lstnet", "1,2,3\n4,5,6\n7,8\n", r"x\.txt, line 3: 2 values, but line 1 has 3"),
        ("lstnet", "1,2,3\n4,abc,6\n", r"x\.txt, line 2, column 2 \(1\): 'abc' is not a finite"),
        ("lstnet", "1,2\n\n3,nan\n", r"x\.txt, line 3, column 2 \(1\): 'nan' is not a finite"),
        ("lstnet", "1,2\n3,\n", r"x\.txt, line 2, column 2 \(1\): an empty value"),
        ("lstnet", "", r"x\.txt: the file is empty"),
        ("lstnet", "\n \n", r"x\.txt: the file is empty"),
        ("csv", "a,b\n1,2\n3,4,5\n", r"x\.txt, line 3: 3 values, but line 2 has 2"),
        ("csv", "a,b\n1,2,3\n", r"x\.txt, line 2: 3 values, but the header \(line 1\) names 2"),
        ("csv", "a,b\n1,2\n3,x\n", r"x\.txt, line 3, column 2 \(b\): 'x' is not a finite"),
        ("csv", "a,b\n", r"x\.txt: a header line but no data rows"),
        ("csv", "", r"x\.txt: the file is empty"),
        ("ett", "a,b\n1,2\n", r"first column is 'date', found 'a'"),
        ("ett", "date,b\n2016-07-01 00:00:00,1\nyesterday,2\n", r"line 3: date 'yesterday'"),
    ],
)
def test_bad_series_files_name_the_file_and_line(tmp_path, fmt, text, pattern):
    path = tmp_path / "x.txt"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=pattern):
        load_series(path, fmt)


def test_corrupt_gzip_and_missing_file(tmp_path, monkeypatch):
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match=r"bad\.txt\.gz: not a valid gzip"):
        load_series(tmp_path / "bad.txt.gz", "lstnet")
    monkeypatch.setenv(images_mod.DATA_ENV, str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as e:
        load_series("nope.txt", "lstnet", hint="Set forecast.path.")
    msg = str(e.value)
    for place in ("nope.txt", "nope.txt.gz", str(tmp_path / "env" / "nope.txt.gz")):
        assert place in msg
    assert msg.endswith("Set forecast.path.")
    # The environment directory is searched for relative paths.
    (tmp_path / "env").mkdir()
    write_lstnet(tmp_path / "env" / "nope.txt", _matrix(5, 2))
    assert load_series("nope.txt", "lstnet").values.shape == (5, 2)


# ----------------------------------------------------------------------------- protocols


def _series(n: int, cols: int = 2, fmt: str = "lstnet", step_s: float | None = None) -> Series:
    values = np.arange(n * cols, dtype=np.float64).reshape(n, cols) + 1.0
    return Series(values, tuple(str(i) for i in range(cols)), Path("mem"), fmt, step_s)


def test_ett_borders_equal_the_published_ones():
    hourly = _series(17420, fmt="ett", step_s=3600)
    for lookback in (96, 336):
        b1, b2 = long_term_borders(hourly, lookback)
        assert b1 == [0, 12 * 30 * 24 - lookback, 12 * 30 * 24 + 4 * 30 * 24 - lookback]
        assert b2 == [12 * 30 * 24, 12 * 30 * 24 + 4 * 30 * 24, 12 * 30 * 24 + 8 * 30 * 24]
        assert b2 == [8640, 11520, 14400]
    for horizon, test_windows in ((96, 2785), (192, 2689), (336, 2545), (720, 2161)):
        data = prepare_forecast(hourly, "long_term", 336, horizon)
        assert len(data.splits["test"]) == test_windows == 2881 - horizon
        assert data.splits["val"].start == 8640 and data.splits["test"].start == 11520
    quarter = _series(69680, fmt="ett", step_s=900)  # ETTm: four rows an hour
    assert long_term_borders(quarter, 96)[1] == [4 * 8640, 4 * 11520, 4 * 14400]
    with pytest.raises(DataFormatError, match="needs 14400 rows"):
        long_term_borders(_series(14000, fmt="ett", step_s=3600), 96)


def test_custom_and_lstnet_borders_on_exchange_rate_size():
    n = 7588
    custom = prepare_forecast(_series(n), "long_term", 96, 96)
    # 70/10/20: 5311 / 760 / 1517 rows; test windows 1518 - H.
    assert len(custom.splits["test"]) == 1518 - 96
    assert custom.splits["val"].start == 5311 and custom.splits["test"].start == n - 1517
    assert custom.scaler_rows == range(0, 5311)
    for h in (3, 6, 12, 24):
        lst = prepare_forecast(_series(n), "lstnet", 168, h)
        sp = lst.splits
        # Target rows: train [168 + h - 1, 4552), val [4552, 6070), test [6070, 7588).
        targets = {k: (w.start + h - 1, w.end + h - 1) for k, w in sp.items()}
        assert targets == {"train": (168 + h - 1, 4552), "val": (4552, 6070), "test": (6070, n)}
        assert len(sp["test"]) == 1518


@pytest.mark.parametrize("protocol", ["lstnet", "long_term"])
def test_splits_are_chronological_and_windows_are_the_rows(protocol):
    s = _series(300, cols=3)
    L, H = 12, 5
    data = prepare_forecast(s, protocol, L, H, dtype=torch.float64)
    sp = data.splits
    assert sp["train"].end <= sp["val"].start + (H if protocol == "lstnet" else 0)
    assert sp["train"].start < sp["val"].start < sp["test"].start
    # Targets never overlap: every split's targets come after the previous split's.
    last_target = {k: w.end - 1 + H - 1 for k, w in sp.items()}
    first_target = {k: w.start + (H - 1 if protocol == "lstnet" else 0) for k, w in sp.items()}
    assert last_target["train"] < first_target["val"] and last_target["val"] < first_target["test"]
    for name, w in sp.items():
        o = w.origins
        x, y = w.batch(o)
        assert x.shape == (len(w), L, 3)
        for i in (0, len(w) // 2, len(w) - 1):
            t = int(o[i])
            torch.testing.assert_close(x[i], data.values[t - L : t])
            want = data.values[t + H - 1] if protocol == "lstnet" else data.values[t : t + H]
            torch.testing.assert_close(y[i], want)
        assert o.diff().eq(1).all(), name
    scaled = torch.from_numpy(s.values)
    torch.testing.assert_close(data.scaler.inverse(data.values), scaled)


def test_long_term_scaling_uses_training_rows_only():
    s = _series(400, cols=2)
    base = prepare_forecast(s, "long_term", 10, 5, dtype=torch.float64)
    train_end = base.scaler_rows.stop
    assert train_end == int(400 * 0.7)
    changed = Series(s.values.copy(), s.columns, s.path, s.format)
    changed.values[train_end:] *= 1000.0  # validation and test rows only
    other = prepare_forecast(changed, "long_term", 10, 5, dtype=torch.float64)
    torch.testing.assert_close(other.scaler.shift, base.scaler.shift)
    torch.testing.assert_close(other.scaler.scale, base.scaler.scale)
    train = torch.from_numpy(s.values[:train_end])
    torch.testing.assert_close(base.scaler.shift, train.mean(0))
    torch.testing.assert_close(base.scaler.scale, train.std(0, unbiased=False))
    # Training rows are z-scored: mean 0, population std 1.
    z = base.values[:train_end]
    torch.testing.assert_close(z.mean(0), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(2, dtype=torch.float64))


def test_lstnet_scaling_whole_file_or_train_only():
    s = _series(200, cols=2)
    s.values[190] = [-500.0, 7.0]  # a test row with the largest |value| of series 0
    whole = prepare_forecast(s, "lstnet", 8, 3, scale="whole", dtype=torch.float64)
    train = prepare_forecast(s, "lstnet", 8, 3, scale="train", dtype=torch.float64)
    np.testing.assert_allclose(whole.scaler.scale.numpy(), np.abs(s.values).max(0))
    np.testing.assert_allclose(train.scaler.scale.numpy(), np.abs(s.values[:120]).max(0))
    assert train.scaler_rows == range(0, 120) and whole.scaler_rows == range(0, 200)
    assert float(whole.values.abs().max()) == 1.0
    assert FORECAST_PROTOCOLS.get("lstnet").original_units
    with pytest.raises(ValueError, match="unknown scale"):
        prepare_forecast(s, "lstnet", 8, 3, scale="test")


def test_too_short_series_and_batches():
    with pytest.raises(DataFormatError, match="no train samples"):
        prepare_forecast(_series(40), "lstnet", 30, 3)
    w = prepare_forecast(_series(100), "long_term", 5, 2).splits["train"]
    g = torch.Generator().manual_seed(0)
    sizes = [len(x) for x, _ in w.batches(16, g)]
    assert sum(sizes) == len(w) and w.num_batches(16) == len(sizes)
    assert [len(x) for x, _ in w.batches(16, g, limit=20)] == [16, 4]
    assert w.num_batches(16, limit=20, drop_last=True) == 1
    seen = torch.cat(w.origin_batches(16, torch.Generator().manual_seed(3)))
    assert sorted(seen.tolist()) == list(range(w.start, w.end))
