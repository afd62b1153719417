"""Deterministic in-memory batching of image datasets (no DataLoader, no worker processes)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch

from diffnas.data.augment import Augment
from diffnas.data.images import ImageDataset

# Large odd multiplier so the per-pass seeds of different base seeds do not collide early.
_PASS_SEED_MULTIPLIER = 1_000_003


def split_indices(n: int, portion: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split range(n) into the first floor(portion * n) indices (train) and the rest (val)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= portion <= 1.0:
        raise ValueError(f"portion must lie in [0, 1], got {portion}")
    # Contiguous halves, as DARTS splits the CIFAR train set (int(np.floor(portion * n))).
    k = math.floor(portion * n)
    return torch.arange(k), torch.arange(k, n)


class EpochBatches:
    """Batches of one index subset of a dataset; `epoch(seed)` replays the same batches exactly."""

    def __init__(
        self,
        dataset: ImageDataset,
        indices: torch.Tensor,
        batch_size: int,
        augment: Augment | None,
        train: bool,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(dataset)):
            raise IndexError(f"indices must lie in [0, {len(dataset)}) for {dataset.name}")
        self.dataset = dataset
        self.indices = indices
        self.batch_size = batch_size
        # Without an explicit Augment, still hand out normalised floats, just never augmented.
        self.augment = (
            augment
            if augment is not None
            else Augment(dataset.mean, dataset.std, pad=0, flip=False)
        )
        self.train = train
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.memory_format = memory_format
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None

    @property
    def num_samples(self) -> int:
        """Number of images in the subset."""
        return len(self.indices)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def _subset(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Copied to the device once, on first use, so a GPU loop never re-uploads images per step.
        if self._x is None or self._y is None:
            self._x = self.dataset.x[self.indices].to(self.device)
            self._y = self.dataset.y[self.indices].to(self.device)
        return self._x, self._y

    def epoch(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over one epoch of (x float normalised, y int64) batches on the device."""
        x_all, y_all = self._subset()
        generator = torch.Generator().manual_seed(seed)
        if self.train:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        order = order.to(self.device)
        return self._iterate(x_all, y_all, order, generator)

    def _iterate(
        self,
        x_all: torch.Tensor,
        y_all: torch.Tensor,
        order: torch.Tensor,
        generator: torch.Generator,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.augment(x_all[idx], generator, self.train)
            yield x.contiguous(memory_format=self.memory_format), y_all[idx]


def cycle_batches(batches: EpochBatches, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield batches forever, re-shuffling each pass with a seed derived from `seed`."""
    # Checked here, not inside the generator, so the error shows at the call site.
    if len(batches) == 0:
        raise ValueError("cycle_batches needs at least one batch per epoch")
    return _cycle(batches, seed)


def _cycle(batches: EpochBatches, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for pass_index in itertools.count():
        # Kept within torch's accepted seed range for any base seed.
        pass_seed = (seed * _PASS_SEED_MULTIPLIER + pass_index) % (2**63)
        yield from batches.epoch(pass_seed)
