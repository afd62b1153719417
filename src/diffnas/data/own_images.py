"""Your own images: a folder of class folders (`data.dataset = "folder"`) or numpy arrays
(`data.dataset = "arrays"`), loaded into memory as an ImageDataset like the built-in sets.

Folder layout (the ImageNet / ImageFolder one), under `data.data_dir`:

    train/<class>/*.png|jpg|jpeg|bmp|gif|webp   (required)
    val/<class>/...                              (optional: the test split)

Class indices are the sorted names of the class folders under `train/`. Without `val/`, the
test split is a seeded `data.holdout` share of each class's training images (the same on every
run). Images are decoded with Pillow; the first image fixes the channel count (1 for grayscale
modes, 3 for colour), every image is resized (shorter side) and centre-cropped to
`data.image_size` (0: keep the size, which must then be the same for all). Mean and std are
computed per channel on the training images. A file that cannot be decoded, or whose channel
count differs from the first, is an error naming it, or skipped (and counted) with
`data.skip_bad_files = true`; an empty class folder is always an error.

Arrays: an `.npz` file (`data.data_dir` is the file, or a directory holding exactly one) with
`x_train`, `y_train` and, for the test split, `x_test`, `y_test`. Images are uint8, or floats
in [0, 1], laid out NHWC, NCHW or NHW (grayscale); labels are integers in [0, K).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from diffnas.data.images import (
    IMAGE_DATASETS,
    DataFormatError,
    DataNotFoundError,
    ImageDataset,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _setting(data, key: str, default):
    return default if data is None else getattr(data, key)


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (float64 sums)."""
    v = x.double().div_(255)
    mean = v.mean(dim=(0, 2, 3))
    std = v.std(dim=(0, 2, 3)).clamp_min(1e-6)  # a constant channel still normalises
    return tuple(mean.tolist()), tuple(std.tolist())


# ----------------------------------------------------------------------------- folders


def _decode(path: Path, size: int, channels: int | None) -> np.ndarray:
    """One image as uint8 [C, H, W]; DataFormatError naming the file when it cannot be used."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            gray = im.mode in GRAY_MODES
            c = 1 if gray else 3
            if channels is not None and c != channels:
                raise DataFormatError(
                    f"{path}: a {'grayscale' if gray else 'colour'} image ({im.mode}) among "
                    f"{channels}-channel ones (mixed modes); convert it, or set "
                    "data.skip_bad_files = true"
                )
            im = im.convert("L" if gray else "RGB")
            if size:
                w, h = im.size
                scale = size / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))))
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        if isinstance(e, DataFormatError):
            raise
        raise DataFormatError(
            f"{path}: not a readable image ({e}); remove it, or set data.skip_bad_files = true"
        ) from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _class_files(split_dir: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataFormatError(f"{split_dir}: no class folders (expected {split_dir}/<class>/*.png)")
    out = {}
    for c in classes:
        files = sorted(p for p in c.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataFormatError(
                f"{c}: an empty class folder (no {', '.join(IMAGE_SUFFIXES)} files); remove it "
                "or add its images"
            )
        out[c.name] = files
    return out


def _holdout(files: dict[str, list[Path]], share: float, seed: int, split: str):
    """The seeded per-class train/test division of `files` when there is no val/ folder."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, paths in files.items():
        order = torch.randperm(len(paths), generator=g).tolist()
        n_test = min(len(paths) - 1, round(share * len(paths)))
        chosen = order[:n_test] if split == "test" else order[n_test:]
        out[name] = [paths[i] for i in sorted(chosen)]
    return out


HOLDOUT_SEED = 20261203
# Mean and std of each folder's training split, by (its files with their sizes and times,
# image_size, skip_bad_files, holdout):
# loading the test split after the training one (as every training does) decodes no image twice.
_TRAIN_STATS: dict[tuple, tuple[tuple[float, ...], tuple[float, ...]]] = {}


@IMAGE_DATASETS.register("folder")
def load_folder(split: str, data_dir: str | None = None, data=None) -> ImageDataset:
    """An image folder (see the module docstring); `data` is the `[data]` config section."""
    if not data_dir:
        raise DataNotFoundError(
            "data.dataset = 'folder' needs data.data_dir: the directory holding train/<class>/"
        )
    root = Path(data_dir).expanduser()
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataNotFoundError(
            f"data.data_dir = {data_dir!r}: no train/ folder (expected {train_dir}/<class>/...)"
        )
    train_files = _class_files(train_dir)
    classes = list(train_files)
    if split == "train" or not (root / "val").is_dir():
        files = train_files
        if not (root / "val").is_dir():
            share = _setting(data, "holdout", 0.1)
            files = _holdout(train_files, share, HOLDOUT_SEED, split)
    else:
        files = _class_files(root / "val")
        unknown = sorted(set(files) - set(classes))
        if unknown:
            raise DataFormatError(
                f"{root / 'val'}: class folders {', '.join(unknown)} are not in {train_dir}"
            )
    size = _setting(data, "image_size", 0)
    skip = _setting(data, "skip_bad_files", False)
    images, labels, skipped, channels, shape = [], [], [], None, None
    for label, name in enumerate(classes):
        for path in files.get(name, []):
            try:
                a = _decode(path, size, channels)
                if shape is not None and a.shape[1:] != shape:
                    raise DataFormatError(
                        f"{path}: {a.shape[2]}x{a.shape[1]} pixels, the others "
                        f"{shape[1]}x{shape[0]}; set data.image_size to resize them all"
                    )
            except DataFormatError:
                if not skip:
                    raise
                skipped.append(path)
                continue
            channels, shape = a.shape[0], a.shape[1:]
            images.append(a)
            labels.append(label)
    if skipped:
        warnings.warn(
            f"{root}: skipped {len(skipped)} bad image file(s) of the {split} split "
            f"(data.skip_bad_files), e.g. {skipped[0]}",
            stacklevel=2,
        )
    if not images:
        raise DataFormatError(f"{root}: no usable images in the {split} split")
    x = torch.from_numpy(np.stack(images))
    y = torch.tensor(labels, dtype=torch.int64)
    # Normalisation statistics are always those of the training images.
    listing = tuple(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) for ps in train_files.values() for p in ps
    )
    key = (listing, size, skip, _setting(data, "holdout", 0.1))
    if split == "train":
        _TRAIN_STATS[key] = _stats(x)
    elif key not in _TRAIN_STATS:
        load_folder("train", data_dir, data)
    mean, std = _TRAIN_STATS[key]
    return ImageDataset(x, y, len(classes), mean, std, f"folder {root}")


# ----------------------------------------------------------------------------- arrays


def _npz_path(data_dir: str | None) -> Path:
    if not data_dir:
        raise DataNotFoundError(
            "data.dataset = 'arrays' needs data.data_dir: an .npz file with x_train, y_train"
        )
    p = Path(data_dir).expanduser()
    if p.is_dir():
        found = sorted(p.glob("*.npz"))
        if len(found) != 1:
            raise DataNotFoundError(
                f"data.data_dir = {data_dir!r}: expected exactly one .npz file in it, found "
                f"{len(found)}; point data.data_dir at the file"
            )
        return found[0]
    if not p.is_file():
        raise DataNotFoundError(f"data.data_dir = {data_dir!r}: no such .npz file")
    return p


def _as_nchw(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.ndim == 3:  # NHW: grayscale
        return x[:, None]
    if x.ndim != 4:
        raise DataFormatError(f"{path}: {key} has shape {x.shape}; expected N,H,W,C or N,C,H,W")
    if x.shape[-1] in (1, 3):  # NHWC, also when C could be read either way
        return x.transpose(0, 3, 1, 2)
    if x.shape[1] in (1, 3):
        return x
    raise DataFormatError(
        f"{path}: {key} has shape {x.shape}: neither axis 1 nor axis 3 is a channel axis of "
        "size 1 or 3"
    )


def _as_uint8(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise DataFormatError(f"{path}: {key} is {x.dtype}; expected uint8, or floats in [0, 1]")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DataFormatError(
            f"{path}: {key} holds floats outside [0, 1] (min {x.min()}, max {x.max()}); store "
            "uint8 images, or floats scaled to [0, 1]"
        )
    return np.round(x * 255).astype(np.uint8)


@IMAGE_DATASETS.register("arrays")
def load_arrays(split: str, data_dir: str | None = None, data=None) -> ImageDataset:
    """Images and labels from an .npz file (see the module docstring)."""
    path = _npz_path(data_dir)
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{path}: not a readable .npz file ({e})") from None
    suffix = "train" if split == "train" else "test"
    kx, ky = f"x_{suffix}", f"y_{suffix}"
    with arrays:
        missing = [k for k in ("x_train", "y_train", kx, ky) if k not in arrays.files]
        if missing:
            raise DataFormatError(
                f"{path}: no {', '.join(dict.fromkeys(missing))} array(s); it holds "
                f"{', '.join(arrays.files) or 'nothing'}"
            )
        x_train, y_train = arrays["x_train"], arrays["y_train"]
        x, y = (x_train, y_train) if split == "train" else (arrays[kx], arrays[ky])
    for key, imgs, labs in (("x_train", x_train, y_train), (kx, x, y)):
        if labs.ndim != 1 or len(labs) != len(imgs):
            raise DataFormatError(
                f"{path}: {key.replace('x_', 'y_')} has shape {labs.shape}; expected "
                f"({len(imgs)},), one label per image"
            )
        if not np.issubdtype(labs.dtype, np.integer):
            raise DataFormatError(
                f"{path}: {key.replace('x_', 'y_')} is {labs.dtype}; expected integer labels"
            )
    if len(y_train) == 0:
        raise DataFormatError(f"{path}: x_train holds no images")
    num_classes = int(y_train.max()) + 1
    if y_train.min() < 0 or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
        raise DataFormatError(
            f"{path}: labels must lie in [0, {num_classes}) (the classes of y_train), found "
            f"{int(min(y.min(), y_train.min()))}..{int(max(y.max(), y_train.max()))}"
        )
    x_train = _as_uint8(_as_nchw(x_train, path, "x_train"), path, "x_train")
    x = _as_uint8(_as_nchw(x, path, kx), path, kx)
    if x.shape[1:] != x_train.shape[1:]:
        raise DataFormatError(
            f"{path}: {kx} images are {x.shape[1:]}, those of x_train {x_train.shape[1:]}"
        )
    mean, std = _stats(torch.from_numpy(np.ascontiguousarray(x_train)))
    return ImageDataset(
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(y.astype(np.int64)),
        num_classes,
        mean,
        std,
        f"arrays {path}",
    )
