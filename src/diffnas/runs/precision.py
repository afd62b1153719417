"""Mixed precision (`run.autocast`): the context image forward passes run in."""

from __future__ import annotations

import contextlib

import torch

from diffnas.runs.config import ConfigError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16}


def check_autocast(run_cfg, device: torch.device) -> None:
    """ConfigError for an autocast setting the run cannot take."""
    if run_cfg.autocast == "off":
        return
    if run_cfg.dtype != "float32":
        raise ConfigError(
            f"run.autocast = {run_cfg.autocast!r} needs run.dtype = 'float32' (got "
            f"{run_cfg.dtype!r}); set run.autocast = 'off' for {run_cfg.dtype} runs"
        )
    if device.type == "cpu" and run_cfg.channels_last:
        # Seen with torch 2.13: in a DARTS search step, a bf16 channels_last depthwise conv's
        # CPU backward returned NaN weight gradients from finite inputs (NCHW: finite).
        raise ConfigError(
            f"run.autocast = {run_cfg.autocast!r} on CPU needs run.channels_last = false (the "
            "CPU bf16 channels_last depthwise-conv backward gave NaN weight gradients); "
            "bf16 is meant for GPUs"
        )


def autocast(device: torch.device | str, mode: str = "off"):
    """torch.autocast on `device` in the mode's dtype; a no-op context for "off"."""
    if mode == "off":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=AUTOCAST_DTYPES[mode])
