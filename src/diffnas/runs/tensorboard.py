"""TensorBoard logging of epoch records, when the `tensorboard` package is installed.

Every numeric value of an epoch record becomes a scalar (nested dicts as `key/subkey`), and
the edge weights of a search become histograms, under `<run dir>/tensorboard`. Without
tensorboard, `open_writer` returns None and nothing else changes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


def is_available() -> bool:
    """Whether torch's SummaryWriter can be used (it needs the tensorboard package)."""
    return importlib.util.find_spec("tensorboard") is not None


def open_writer(run_path: str | Path, enabled: bool = True):
    """A SummaryWriter in `<run dir>/tensorboard`, or None when disabled or unavailable."""
    if not enabled or not is_available():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(Path(run_path) / "tensorboard"))


def _scalars(record: dict, prefix: str = ""):
    for k, v in record.items():
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, int | float):
            yield prefix + k, float(v)
        elif isinstance(v, dict):
            yield from _scalars(v, f"{prefix}{k}/")


def log_epoch(writer, record: dict, weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write one epoch record (and edge-weight histograms); a no-op without a writer."""
    if writer is None:
        return
    step = record["epoch"]
    for name, value in _scalars(record):
        if name not in ("epoch", "time"):
            writer.add_scalar(name, value, step)
    for name, w in (weights or {}).items():
        writer.add_histogram(f"weights/{name}", w.detach().float().cpu(), step)
    writer.flush()
