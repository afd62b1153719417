"""Datasets, splits, augmentation and batching; knows nothing of models or search."""

from diffnas.data.augment import Augment
from diffnas.data.batches import EpochBatches, cycle_batches, split_indices
from diffnas.data.images import (
    IMAGE_DATASETS,
    DataFormatError,
    DataNotFoundError,
    ImageDataset,
    load_images,
)
from diffnas.data.own_images import load_arrays, load_folder  # registers folder and arrays

__all__ = [
    "IMAGE_DATASETS",
    "Augment",
    "DataFormatError",
    "DataNotFoundError",
    "EpochBatches",
    "ImageDataset",
    "cycle_batches",
    "load_arrays",
    "load_folder",
    "load_images",
    "split_indices",
]
