"""TensorBoard logging: scalars and histograms when available, nothing when not."""

from __future__ import annotations

import torch

from diffnas.runs import tensorboard


class FakeWriter:
    def __init__(self):
        self.scalars, self.histograms, self.flushed = {}, {}, 0

    def add_scalar(self, name, value, step):
        self.scalars[(name, step)] = value

    def add_histogram(self, name, values, step):
        self.histograms[(name, step)] = values

    def flush(self):
        self.flushed += 1


def test_epoch_record_becomes_scalars_and_histograms():
    w = FakeWriter()
    record = {
        "kind": "epoch",
        "epoch": 3,
        "time": 1.0,
        "valid_acc": 81.5,
        "collapse_warning": True,
        "active_ops": {"normal": 90, "reduce": 88},
        "genotype": "...",
    }
    tensorboard.log_epoch(w, record, {"normal": torch.ones(14, 8)})
    assert w.scalars == {
        ("valid_acc", 3): 81.5,
        ("collapse_warning", 3): 1.0,
        ("active_ops/normal", 3): 90.0,
        ("active_ops/reduce", 3): 88.0,
    }
    assert torch.equal(w.histograms[("weights/normal", 3)], torch.ones(14, 8))
    assert w.flushed == 1


def test_nothing_happens_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorboard, "is_available", lambda: False)
    assert tensorboard.open_writer(tmp_path) is None
    tensorboard.log_epoch(None, {"epoch": 0, "valid_acc": 1.0})  # a no-op
    assert not (tmp_path / "tensorboard").exists()
    assert tensorboard.open_writer(tmp_path, enabled=False) is None
