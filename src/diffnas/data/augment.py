"""Batched image augmentation in torch (pad-and-crop, flip, cutout) that runs on any device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


class Augment:
    """Normalise a uint8 batch; in train mode also random pad-and-crop, flip and cutout.

    Follows the DARTS CIFAR pipeline: crop with zero padding in pixel space, horizontal flip,
    normalise, then cutout (the hole is zero in normalised space).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        pad: int = 4,
        flip: bool = True,
        cutout: int = 0,
    ):
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got {mean} and {std}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be positive, got {std}")
        if pad < 0 or cutout < 0:
            raise ValueError(f"pad and cutout must be >= 0, got pad={pad}, cutout={cutout}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.pad = pad
        self.flip = flip
        self.cutout = cutout
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return (
            f"Augment(mean={self.mean}, std={self.std}, pad={self.pad}, flip={self.flip}, "
            f"cutout={self.cutout})"
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map a uint8 batch [B, C, H, W] to float32 (x/255 - mean) / std."""
        self._check(x)
        mean, std = self._device_stats(x.device)
        return (x.float() / 255.0 - mean) / std

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator | None, train: bool
    ) -> torch.Tensor:
        """Augment (when `train`) and normalise a uint8 batch; randomness comes from `generator`."""
        self._check(x)
        if not train:
            return self.normalize(x)
        b, _, h, w = x.shape
        # Draw everything on the CPU generator in a fixed order so runs reproduce on any device.
        if self.pad > 0:
            off_y = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator)
            off_x = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator)
        else:
            off_y = off_x = torch.zeros(b, dtype=torch.long)
        if self.flip:
            flipped = torch.rand(b, generator=generator) < 0.5
        else:
            flipped = torch.zeros(b, dtype=torch.bool)
        rows = off_y[:, None] + torch.arange(h)
        ar = torch.arange(w)
        # A flip after the crop reads the crop window right to left.
        cols = off_x[:, None] + torch.where(flipped[:, None], w - 1 - ar, ar)
        out = x
        if self.pad > 0 or self.flip:
            padded = F.pad(x, (self.pad,) * 4) if self.pad > 0 else x
            rows, cols = rows.to(x.device), cols.to(x.device)
            batch = torch.arange(b, device=x.device)[:, None, None, None]
            chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            out = padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
        out = self.normalize(out)
        if self.cutout > 0:
            out = out * self._cutout_keep(b, h, w, generator, x.device)[:, None]
        return out

    def _cutout_keep(
        self, b: int, h: int, w: int, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        """Float mask [B, H, W]: 0 inside each image's square (clipped at borders), 1 elsewhere."""
        cy = torch.randint(0, h, (b,), generator=generator).to(device)
        cx = torch.randint(0, w, (b,), generator=generator).to(device)
        half = self.cutout // 2
        y0, y1 = (cy - half).clamp(0, h), (cy + half).clamp(0, h)
        x0, x1 = (cx - half).clamp(0, w), (cx + half).clamp(0, w)
        ys, xs = torch.arange(h, device=device), torch.arange(w, device=device)
        in_y = (ys >= y0[:, None]) & (ys < y1[:, None])
        in_x = (xs >= x0[:, None]) & (xs < x1[:, None])
        hole = in_y[:, :, None] & in_x[:, None, :]
        return (~hole).float()

    def _check(self, x: torch.Tensor) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise TypeError(f"expected a uint8 batch [B, C, H, W], got {x.dtype} {tuple(x.shape)}")
        if x.shape[1] != len(self.mean):
            raise ValueError(
                f"batch has {x.shape[1]} channels but mean/std have {len(self.mean)} values"
            )

    def _device_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Cached per device so a GPU loop does not copy mean/std every step.
        if device not in self._stats:
            mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
            self._stats[device] = (mean, std)
        return self._stats[device]
