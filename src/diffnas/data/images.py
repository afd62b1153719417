"""In-memory image classification datasets: Fashion-MNIST (idx), CIFAR-10/100 (python batches)."""

from __future__ import annotations

import gzip
import importlib
import os
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffnas.registry import Registry

SPLITS = ("train", "test")
DATA_ENV = "DIFFNAS_DATA"
# Where the Debian package `dataset-fashion-mnist` puts the files; a module constant so tests
# can point it elsewhere.
FASHION_MNIST_SYSTEM_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)

FASHION_MNIST_HELP = (
    "install the Debian package (`apt-get install dataset-fashion-mnist`) or put the 4 files "
    "from github.com/zalandoresearch/fashion-mnist (data/fashion) into a directory and pass "
    "--set data.data_dir=DIR"
)
CIFAR_HELP = (
    "download {archive} from https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass "
    "--set data.data_dir=DIR (the extracted folder or its parent); nothing is downloaded "
    "automatically"
)


class DataNotFoundError(FileNotFoundError):
    """A dataset file is missing; the message names it, where it was sought and how to get it."""


class DataFormatError(ValueError):
    """A dataset file exists but is truncated, corrupt or not in the expected format."""


@dataclass
class ImageDataset:
    """A whole image classification split held in memory as uint8 images and int64 labels."""

    x: torch.Tensor  # uint8 [N, C, H, W]
    y: torch.Tensor  # int64 [N]
    num_classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    name: str

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError(
                f"{self.name}: x must be uint8 [N, C, H, W], got {self.x.dtype} "
                f"{tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.dim() != 1 or len(self.y) != len(self.x):
            raise ValueError(
                f"{self.name}: y must be int64 [N] with N={len(self.x)}, got {self.y.dtype} "
                f"{tuple(self.y.shape)}"
            )
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"{self.name}: mean/std need {self.in_channels} values, got "
                f"{len(self.mean)}/{len(self.std)}"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def in_channels(self) -> int:
        """Number of image channels C."""
        return self.x.shape[1]

    @property
    def image_size(self) -> int:
        """Image height H (all supported datasets are square)."""
        return self.x.shape[2]


# loader(split, data_dir, data): `data` is the `[data]` config section (None: its defaults),
# for the loaders with settings of their own (image size, bad files).
ImageLoader = Callable[..., ImageDataset]
IMAGE_DATASETS: Registry[ImageLoader] = Registry("image dataset")


def load_images(name: str, split: str, data_dir: str | None = None, data=None) -> ImageDataset:
    """Load split "train" or "test" of the registered image dataset `name`."""
    loader = IMAGE_DATASETS.get(name)
    _check_split(split)
    return loader(split, data_dir, data)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")


def _search_dirs(data_dir: str | None, subdir: str, extra: tuple[str, ...] = ()) -> list[Path]:
    """Candidate directories, in search order, without duplicates. A `data_dir` the user set is
    the only place looked in (no silent fall-back to another copy); it must exist."""
    dirs: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            what = "is a file, not a directory" if root.exists() else "no such directory"
            raise DataNotFoundError(
                f"data.data_dir = {data_dir!r}: {what}; set it to the directory that holds the "
                "dataset's files, or leave it empty to use the default places"
            )
        return [root, root / subdir]
    env = os.environ.get(DATA_ENV)
    if env:
        dirs.append(Path(env) / subdir)
    dirs += [Path(d) for d in extra]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _not_found(what: str, files: list[str], dirs: list[Path], how: str) -> DataNotFoundError:
    places = "\n".join(f"  - {d}" for d in dirs) if dirs else "  (no place to look)"
    need = files[0] if len(files) == 1 else f"{', '.join(files)} together in one directory"
    env_note = "" if os.environ.get(DATA_ENV) else f" (${DATA_ENV} is not set)"
    return DataNotFoundError(
        f"{what}: could not find {need}. Searched{env_note}:\n{places}\nTo get it: {how}"
    )


def _check_labels(y: torch.Tensor, num_classes: int, path: Path) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataFormatError(
            f"{path}: labels must lie in [0, {num_classes}), found {int(y.min())}..{int(y.max())}"
        )


# ----------------------------------------------------------------------------- Fashion-MNIST

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an idx file (gzipped when its name ends in .gz) holding uint8 data with `magic`."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataFormatError(f"{path}: not a valid gzip file ({e})") from e
    if len(raw) < 4:
        raise DataFormatError(f"{path}: file is {len(raw)} bytes, too short for an idx header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataFormatError(f"{path}: wrong idx magic number {found}, expected {magic}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated idx header ({len(raw)} of {header} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(raw) - header
    if payload != expected:
        raise DataFormatError(
            f"{path}: idx payload is {payload} bytes, but the header dims {dims} need {expected}"
            + (" (file truncated)" if payload < expected else "")
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


@IMAGE_DATASETS.register("fashion_mnist")
def load_fashion_mnist(split: str, data_dir: str | None = None, data=None) -> ImageDataset:
    """Fashion-MNIST from its idx files (1x28x28 grayscale, 10 classes)."""
    _check_split(split)
    image_stem, label_stem = _FASHION_FILES[split]
    dirs = _search_dirs(data_dir, "fashion-mnist", FASHION_MNIST_SYSTEM_DIRS)
    # Take both files from one directory so a split never mixes images and labels of two copies.
    for d in dirs:
        image_path, label_path = _find_idx(d, image_stem), _find_idx(d, label_stem)
        if image_path is not None and label_path is not None:
            break
    else:
        raise _not_found(
            f"Fashion-MNIST {split} split",
            [f"{image_stem}[.gz]", f"{label_stem}[.gz]"],
            dirs,
            FASHION_MNIST_HELP,
        )
    images = read_idx(image_path, IDX_IMAGES_MAGIC)
    labels = read_idx(label_path, IDX_LABELS_MAGIC)
    if images.ndim != 3:
        raise DataFormatError(f"{image_path}: expected 3 idx dims (N, H, W), got {images.shape}")
    if labels.ndim != 1:
        raise DataFormatError(f"{label_path}: expected 1 idx dim (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise DataFormatError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    _check_labels(y, 10, label_path)
    return ImageDataset(x, y, 10, (0.2860,), (0.3530,), "fashion_mnist")


# ----------------------------------------------------------------------------- CIFAR


def _numpy_reconstruct() -> Any:
    # numpy >= 2 moved the module to numpy._core; importing numpy.core there warns.
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy's multiarray._reconstruct is not available")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only the numpy/codecs globals a CIFAR python batch needs."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allow-listed global; refuse everything else."""
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        # Python 3 pickles bytes at protocol < 3 as codecs.encode(str, "latin1").
        if module in ("_codecs", "codecs") and name == "encode":
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


# What a damaged pickle stream raises besides UnpicklingError (short reads, bad opcodes' args).
_PICKLE_DAMAGE = (
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
)


def _unpickle_batch(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataFormatError(f"{path}: not a valid CIFAR python batch ({e})") from e
    except _PICKLE_DAMAGE as e:
        raise DataFormatError(
            f"{path}: corrupt or truncated pickle ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def _read_cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[Any, Any]:
    batch = _unpickle_batch(path)
    for key in (b"data", label_key):
        if key not in batch:
            raise DataFormatError(
                f"{path}: missing key {key!r}; keys are {sorted(map(repr, batch))}"
            )
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataFormatError(f"{path}: b'data' must be a uint8 N x 3072 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(f"{path}: b'data' has {data.shape[1]} columns, expected 3072")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataFormatError(f"{path}: {label_key!r} is not a list of integers") from e
    if len(labels) != len(data):
        raise DataFormatError(
            f"{path}: {len(data)} images but {len(labels)} labels under {label_key!r}"
        )
    y = torch.from_numpy(labels)
    _check_labels(y, num_classes, path)
    # Rows are channel-major: 1024 red, then 1024 green, then 1024 blue values.
    x = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return x, y


def _load_cifar(
    split: str,
    data_dir: str | None,
    *,
    name: str,
    subdir: str,
    archive: str,
    files: dict[str, list[str]],
    label_key: bytes,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> ImageDataset:
    _check_split(split)
    wanted = files[split]
    dirs = _search_dirs(data_dir, subdir)
    for d in dirs:
        if all((d / f).is_file() for f in wanted):
            break
    else:
        raise _not_found(f"{name} {split} split", wanted, dirs, CIFAR_HELP.format(archive=archive))
    xs, ys = zip(*(_read_cifar_batch(d / f, label_key, num_classes) for f in wanted), strict=True)
    return ImageDataset(torch.cat(xs), torch.cat(ys), num_classes, mean, std, name)


@IMAGE_DATASETS.register("cifar10")
def load_cifar10(split: str, data_dir: str | None = None, data=None) -> ImageDataset:
    """CIFAR-10 from the python batches (data_batch_1..5, test_batch)."""
    return _load_cifar(
        split,
        data_dir,
        name="cifar10",
        subdir="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        files={"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        label_key=b"labels",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    )


@IMAGE_DATASETS.register("cifar100")
def load_cifar100(split: str, data_dir: str | None = None, data=None) -> ImageDataset:
    """CIFAR-100 from the python files (train, test), with the 100 fine labels."""
    return _load_cifar(
        split,
        data_dir,
        name="cifar100",
        subdir="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        files={"train": ["train"], "test": ["test"]},
        label_key=b"fine_labels",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    )


# ----------------------------------------------------------------------------- synthetic

SYNTHETIC_SEED = 20240601
SYNTHETIC_SIZES = {"train": 512, "test": 256}


@IMAGE_DATASETS.register("synthetic")
def load_synthetic(split: str, data_dir: str | None = None, data=None) -> ImageDataset:
    """Deterministic 3x32x32, 10-class data whose class sets the mean colour (for smoke tests)."""
    _check_split(split)
    del data_dir  # generated, never read from disk
    num_classes, n_train, n_test = 10, SYNTHETIC_SIZES["train"], SYNTHETIC_SIZES["test"]
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    # Both splits come from one stream so they share the class colours, and the train statistics
    # (used for normalisation) are fixed whichever split is asked for.
    colours = torch.rand(num_classes, 3, generator=g) * 150 + 50
    n = n_train + n_test
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    noise = torch.randn(n, 3, 32, 32, generator=g) * 40
    x = (colours[y][:, :, None, None] + noise).round().clamp(0, 255).to(torch.uint8)
    train = x[:n_train].float() / 255
    mean = tuple(round(v, 4) for v in train.mean(dim=(0, 2, 3)).tolist())
    std = tuple(round(v, 4) for v in train.std(dim=(0, 2, 3)).tolist())
    part = slice(0, n_train) if split == "train" else slice(n_train, n)
    return ImageDataset(x[part].clone(), y[part].clone(), num_classes, mean, std, "synthetic")
