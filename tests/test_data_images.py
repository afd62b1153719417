"""Tests for the image data layer: file formats, errors, augmentation and batching."""

from __future__ import annotations

import gzip
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from diffnas.data import (
    IMAGE_DATASETS,
    Augment,
    DataFormatError,
    DataNotFoundError,
    EpochBatches,
    ImageDataset,
    cycle_batches,
    load_images,
    split_indices,
)
from diffnas.data import images as images_mod

REAL_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_search_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the tmp files each test writes may be found, whatever this machine has installed.
    monkeypatch.delenv(images_mod.DATA_ENV, raising=False)
    monkeypatch.setattr(images_mod, "FASHION_MNIST_SYSTEM_DIRS", ())


# ----------------------------------------------------------------------------- file writers


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An idx file: big-endian magic, big-endian dims, uint8 payload."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(directory: Path, split: str, n: int, gz: bool = True) -> tuple[np.ndarray, ...]:
    """Write one split of Fashion-MNIST-format idx files; return the images and labels."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    prefix = "train" if split == "train" else "t10k"
    directory.mkdir(parents=True, exist_ok=True)
    for stem, arr, magic in (
        (f"{prefix}-images-idx3-ubyte", images, 2051),
        (f"{prefix}-labels-idx1-ubyte", labels, 2049),
    ):
        raw = idx_bytes(arr, magic)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)
    return images, labels


def cifar_rows(n: int, seed: int) -> np.ndarray:
    """N x 3072 uint8 rows whose channel c holds values c*80 + small pixel index noise."""
    rng = np.random.default_rng(seed)
    rows = np.empty((n, 3072), dtype=np.uint8)
    for c in range(3):
        rows[:, c * 1024 : (c + 1) * 1024] = c * 80 + rng.integers(0, 50, (n, 1024))
    return rows


def write_pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(directory: Path, n: int = 4) -> dict[str, np.ndarray]:
    """Write data_batch_1..5 and test_batch as the original python batches; return the rows."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        rows = cifar_rows(n, seed=i)
        write_pickle(
            directory / name,
            {
                b"batch_label": f"batch {i}".encode(),
                b"labels": [(i + j) % 10 for j in range(n)],
                b"data": rows,
                b"filenames": [f"img_{j}.png".encode() for j in range(n)],
            },
        )
        written[name] = rows
    return written


def write_cifar100(directory: Path, n: int = 6) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(["train", "test"]):
        write_pickle(
            directory / name,
            {
                b"filenames": [b"x.png"] * n,
                b"batch_label": b"training batch 1 of 1",
                b"fine_labels": [99 - j for j in range(n)],
                b"coarse_labels": [j % 20 for j in range(n)],
                b"data": cifar_rows(n, seed=10 + i),
            },
        )


# ----------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    images, labels = write_fashion(tmp_path, "test", 12, gz=gz)
    ds = load_images("fashion_mnist", "test", str(tmp_path))
    assert isinstance(ds, ImageDataset)
    assert ds.x.shape == (12, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == labels.tolist()
    assert torch.equal(ds.x[:, 0], torch.from_numpy(images))
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (10, 1, 28)
    assert ds.mean == (0.2860,) and ds.std == (0.3530,)


def test_fashion_mnist_found_in_subdir_and_env(tmp_path: Path, monkeypatch) -> None:
    write_fashion(tmp_path / "fashion-mnist", "train", 5)
    assert len(load_images("fashion_mnist", "train", str(tmp_path))) == 5
    monkeypatch.setenv(images_mod.DATA_ENV, str(tmp_path))
    assert len(load_images("fashion_mnist", "train")) == 5


def test_fashion_mnist_truncated_payload(tmp_path: Path) -> None:
    write_fashion(tmp_path, "test", 4)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataFormatError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        load_images("fashion_mnist", "test", str(tmp_path))


def test_fashion_mnist_truncated_gzip_stream(tmp_path: Path) -> None:
    write_fashion(tmp_path, "test", 4)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataFormatError, match="t10k-labels-idx1-ubyte.gz"):
        load_images("fashion_mnist", "test", str(tmp_path))


def test_fashion_mnist_not_gzip(tmp_path: Path) -> None:
    write_fashion(tmp_path, "test", 4)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataFormatError, match="t10k-images-idx3-ubyte.gz.*gzip"):
        load_images("fashion_mnist", "test", str(tmp_path))


def test_fashion_mnist_wrong_magic(tmp_path: Path) -> None:
    write_fashion(tmp_path, "test", 4)
    # A labels file where the images file should be.
    labels = np.zeros(4, dtype=np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))
    with pytest.raises(DataFormatError, match="t10k-images-idx3-ubyte.gz.*magic.*2049"):
        load_images("fashion_mnist", "test", str(tmp_path))


def test_fashion_mnist_count_mismatch(tmp_path: Path) -> None:
    write_fashion(tmp_path, "test", 4)
    labels = np.zeros(3, dtype=np.uint8)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))
    with pytest.raises(DataFormatError, match="4 images.*3 labels"):
        load_images("fashion_mnist", "test", str(tmp_path))


def test_fashion_mnist_missing_lists_places(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(images_mod.DATA_ENV, str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as info:
        load_images("fashion_mnist", "train")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "train-images-idx3-ubyte" in msg
    assert str(tmp_path / "env" / "fashion-mnist") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "zalandoresearch" in msg
    assert "--set data.data_dir=DIR" in msg and "--data-dir" not in msg


def test_a_data_dir_that_is_set_is_the_only_place_looked_in(tmp_path: Path, monkeypatch) -> None:
    """No silent fall-back to $DIFFNAS_DATA or the system copy when data.data_dir is set."""
    env = tmp_path / "env" / "fashion-mnist"
    write_fashion(env, "train", 3)
    monkeypatch.setenv(images_mod.DATA_ENV, str(tmp_path / "env"))
    assert len(load_images("fashion_mnist", "train")) > 0  # found through the variable
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_images("fashion_mnist", "train", str(empty))
    msg = str(info.value)
    assert str(empty) in msg and str(empty / "fashion-mnist") in msg and str(env) not in msg
    with pytest.raises(DataNotFoundError, match="data.data_dir = .*nowhere.*: no such directory"):
        load_images("fashion_mnist", "train", str(tmp_path / "nowhere"))


@pytest.mark.skipif(not REAL_FASHION_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_test_split(monkeypatch) -> None:
    monkeypatch.setattr(images_mod, "FASHION_MNIST_SYSTEM_DIRS", (str(REAL_FASHION_DIR),))
    ds = load_images("fashion_mnist", "test")
    assert ds.x.shape == (10000, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert ds.num_classes == 10
    assert torch.bincount(ds.y, minlength=10).tolist() == [1000] * 10


# ----------------------------------------------------------------------------- CIFAR


def test_cifar10_batches(tmp_path: Path) -> None:
    rows = write_cifar10(tmp_path / "cifar-10-batches-py", n=4)
    train = load_images("cifar10", "train", str(tmp_path))
    assert train.x.shape == (20, 3, 32, 32) and train.x.dtype == torch.uint8
    assert train.y.dtype == torch.int64 and train.y[:4].tolist() == [0, 1, 2, 3]
    assert train.y[4:8].tolist() == [1, 2, 3, 4]  # second batch follows the first
    # Channel-major rows: the first 1024 values are the red plane in row-major order.
    first = torch.from_numpy(rows["data_batch_1"][0])
    assert torch.equal(train.x[0, 0].flatten(), first[:1024])
    assert torch.equal(train.x[0, 2, 31, 31], first[3071])
    assert torch.equal(train.x[0, 1, 0, 5], first[1024 + 5])
    test = load_images("cifar10", "test", str(tmp_path / "cifar-10-batches-py"))
    assert test.x.shape == (4, 3, 32, 32)
    assert torch.equal(test.x.reshape(4, -1), torch.from_numpy(rows["test_batch"]))
    assert train.mean == (0.4914, 0.4822, 0.4465) and train.num_classes == 10


def test_cifar100_fine_labels(tmp_path: Path, monkeypatch) -> None:
    write_cifar100(tmp_path / "cifar-100-python", n=6)
    monkeypatch.setenv(images_mod.DATA_ENV, str(tmp_path))
    ds = load_images("cifar100", "train")
    assert ds.x.shape == (6, 3, 32, 32) and ds.num_classes == 100
    assert ds.y.tolist() == [99, 98, 97, 96, 95, 94]
    assert ds.std == (0.2673, 0.2564, 0.2762)


def _py2_string(data: bytes) -> bytes:
    """Python 2's BINSTRING opcode: how cPickle wrote str, which the originals use throughout."""
    return b"T" + len(data).to_bytes(4, "little") + data


def py2_cifar_pickle(rows: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled as Python 2 / numpy 1.x wrote the original files (numpy.core globals)."""
    n = len(rows)
    dtype = b"cnumpy\ndtype\n" + _py2_string(b"u1") + b"\x89\x88\x87R(K\x03" + _py2_string(b"|")
    dtype += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
    array += _py2_string(b"b") + b"\x87R(K\x01J" + n.to_bytes(4, "little") + b"M\x00\x0c\x86"
    array += dtype + b"\x89" + _py2_string(rows.tobytes()) + b"tb"
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return (
        b"\x80\x02}(" + _py2_string(b"data") + array + _py2_string(b"labels") + label_list + b"u."
    )


def test_cifar10_python2_pickle(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    rows = cifar_rows(3, seed=5)
    (tmp_path / "test_batch").write_bytes(py2_cifar_pickle(rows, [7, 8, 9]))
    ds = load_images("cifar10", "test", str(tmp_path))
    assert ds.y.tolist() == [7, 8, 9]
    assert torch.equal(ds.x.reshape(3, -1), torch.from_numpy(rows))


def test_cifar_corrupt_pickle(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataFormatError, match="test_batch"):
        load_images("cifar10", "test", str(tmp_path))
    path.write_bytes(b"\x00garbage, not a pickle")
    with pytest.raises(DataFormatError, match="test_batch"):
        load_images("cifar10", "test", str(tmp_path))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_cifar_forbidden_global_is_refused(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    write_pickle(tmp_path / "test", {b"data": _Evil(), b"fine_labels": []})
    pattern = re.escape(str(tmp_path / "test")) + r".*refusing to load global (posix|os|nt)\.system"
    with pytest.raises(DataFormatError, match=pattern):
        load_images("cifar100", "test", str(tmp_path))


def test_cifar_bad_shape(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    write_pickle(
        tmp_path / "test_batch",
        {b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]},
    )
    with pytest.raises(DataFormatError, match="test_batch.*3072"):
        load_images("cifar10", "test", str(tmp_path))
    write_pickle(
        tmp_path / "test_batch",
        {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0]},
    )
    with pytest.raises(DataFormatError, match="test_batch.*2 images but 1 labels"):
        load_images("cifar10", "test", str(tmp_path))


def test_cifar_missing_dir_lists_places(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(images_mod.DATA_ENV, str(tmp_path / "env"))
    missing = tmp_path / "missing"
    missing.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_images("cifar10", "train", str(missing))
    msg = str(info.value)
    assert "data_batch_1" in msg
    for place in (missing, missing / "cifar-10-batches-py"):
        assert str(place) in msg
    assert str(tmp_path / "env") not in msg
    assert "cifar-10-python.tar.gz" in msg and "https://www.cs.toronto.edu/~kriz/cifar.html" in msg


def test_unknown_dataset_and_split() -> None:
    with pytest.raises(KeyError, match="cifar10.*fashion_mnist.*synthetic"):
        load_images("imagenet", "train")
    with pytest.raises(ValueError, match="split"):
        load_images("synthetic", "val")
    assert {"cifar10", "cifar100", "fashion_mnist", "synthetic"} <= set(IMAGE_DATASETS.names())


def test_synthetic_is_deterministic_and_balanced() -> None:
    a, b = load_images("synthetic", "train"), load_images("synthetic", "train")
    test = load_images("synthetic", "test")
    assert a.x.shape == (512, 3, 32, 32) and test.x.shape == (256, 3, 32, 32)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.mean == test.mean and a.num_classes == 10
    assert torch.bincount(a.y, minlength=10).min() > 30
    # Learnable: the per-class mean colour separates classes (nearest class mean on test).
    means = torch.stack([a.x[a.y == c].float().mean((0, 2, 3)) for c in range(10)])
    colour = test.x.float().mean((2, 3))
    pred = torch.cdist(colour, means).argmin(1)
    assert (pred == test.y).float().mean() > 0.9


# ----------------------------------------------------------------------------- Augment

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _batch(n: int = 6, size: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(1)).to(
        torch.uint8
    )


def _plain_normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def test_augment_eval_is_plain_normalisation() -> None:
    x = _batch()
    out = Augment(MEAN, STD, pad=4, cutout=4)(x, torch.Generator().manual_seed(0), False)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _plain_normalise(x))


def test_augment_identity_without_pad_flip_cutout() -> None:
    x = _batch()
    out = Augment(MEAN, STD, pad=0, flip=False)(x, torch.Generator().manual_seed(0), True)
    torch.testing.assert_close(out, _plain_normalise(x))


def test_augment_train_shape_and_determinism() -> None:
    x = _batch(16, 32)
    aug = Augment(MEAN, STD, pad=4, flip=True, cutout=8)
    a = aug(x, torch.Generator().manual_seed(7), True)
    b = aug(x, torch.Generator().manual_seed(7), True)
    c = aug(x, torch.Generator().manual_seed(8), True)
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_augment_flip_and_crop_are_exact() -> None:
    x = _batch(64, 8)
    flips = Augment(MEAN, STD, pad=0, flip=True)(x, torch.Generator().manual_seed(0), True)
    plain, mirrored = _plain_normalise(x), _plain_normalise(x.flip(-1))
    is_plain = (flips == plain).flatten(1).all(1)
    is_mirror = (flips == mirrored).flatten(1).all(1)
    assert bool((is_plain | is_mirror).all())
    assert 0 < int(is_mirror.sum()) < 64  # p = 0.5 per image, not one choice per batch

    crops = Augment(MEAN, STD, pad=2, flip=False)(x, torch.Generator().manual_seed(0), True)
    padded = _plain_normalise(torch.nn.functional.pad(x, (2, 2, 2, 2)))
    for i in range(len(x)):
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(crops[i], w) for w in windows)


def test_augment_cutout_zeroes_a_square() -> None:
    # A constant white batch so no normalised pixel is zero except inside the hole.
    x = torch.full((32, 3, 16, 16), 255, dtype=torch.uint8)
    out = Augment(MEAN, STD, pad=0, flip=False, cutout=6)(x, torch.Generator().manual_seed(3), True)
    hole = (out == 0).all(1)  # [B, H, W]
    assert bool((out[~hole[:, None].expand_as(out)] != 0).all())
    full_squares = 0
    for mask in hole:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) > 0 and len(rows) <= 6 and len(cols) <= 6
        # The hole is an axis-aligned rectangle (a square clipped at the border).
        assert int(mask.sum()) == len(rows) * len(cols)
        assert rows.tolist() == list(range(int(rows[0]), int(rows[-1]) + 1))
        full_squares += int(len(rows) == 6 and len(cols) == 6)
    assert full_squares > 0


def test_augment_rejects_bad_input() -> None:
    aug = Augment(MEAN, STD)
    with pytest.raises(TypeError):
        aug(torch.zeros(2, 3, 8, 8), None, False)
    with pytest.raises(ValueError, match="channels"):
        aug(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), None, False)


# ----------------------------------------------------------------------------- batching


def _tiny_dataset(n: int = 50) -> ImageDataset:
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return ImageDataset(x, torch.arange(n, dtype=torch.int64), n, (0.0,), (1.0,), "tiny")


def test_split_indices_sizes() -> None:
    train, val = split_indices(50000, 0.5)
    assert len(train) == len(val) == 25000
    assert train[-1] == 24999 and val[0] == 25000
    train, val = split_indices(10, 0.35)
    assert train.tolist() == [0, 1, 2] and val.tolist() == list(range(3, 10))
    assert [len(t) for t in split_indices(7, 1.0)] == [7, 0]
    with pytest.raises(ValueError):
        split_indices(10, 1.5)


def test_epoch_batches_cover_each_index_once() -> None:
    ds = _tiny_dataset(50)
    indices = torch.arange(5, 45)
    batches = EpochBatches(ds, indices, 16, Augment((0.0,), (1.0,), pad=0, flip=False), True)
    assert len(batches) == 3
    ys = [y for _, y in batches.epoch(0)]
    assert [len(y) for y in ys] == [16, 16, 8]
    seen = torch.cat(ys)
    assert sorted(seen.tolist()) == indices.tolist()
    assert seen.tolist() != indices.tolist()  # shuffled
    xs = torch.cat([x for x, _ in batches.epoch(0)])
    # Images travel with their labels (each image's pixel value is its index / 255).
    torch.testing.assert_close(xs[:, 0, 0, 0], seen.float() / 255)
    dropped = EpochBatches(ds, indices, 16, None, True, drop_last=True)
    assert len(dropped) == 2 and sum(len(y) for _, y in dropped.epoch(0)) == 32


def test_epoch_batches_seeded_and_eval_order() -> None:
    ds = load_images("synthetic", "train")
    train_idx, val_idx = split_indices(len(ds), 0.5)
    aug = Augment(ds.mean, ds.std, pad=4, cutout=8)
    batches = EpochBatches(ds, train_idx, 64, aug, train=True)
    first = list(batches.epoch(3))
    again = list(batches.epoch(3))
    other = list(batches.epoch(4))
    for (xa, ya), (xb, yb) in zip(first, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.dtype == torch.float32 and ya.dtype == torch.int64
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in other]))

    val = EpochBatches(ds, val_idx, 100, aug, train=False)
    v1, v2 = list(val.epoch(0)), list(val.epoch(99))
    assert torch.equal(torch.cat([y for _, y in v1]), ds.y[val_idx])
    assert torch.equal(v1[0][0], v2[0][0])
    torch.testing.assert_close(v1[0][0], aug.normalize(ds.x[val_idx[:100]]))


def test_cycle_batches_reshuffles_each_pass() -> None:
    ds = _tiny_dataset(20)
    batches = EpochBatches(ds, torch.arange(20), 5, None, True)
    stream = cycle_batches(batches, seed=1)
    labels = [next(stream)[1] for _ in range(12)]
    first, second = torch.cat(labels[:4]), torch.cat(labels[4:8])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(20))
    assert not torch.equal(first, second)
    replay = cycle_batches(batches, seed=1)
    assert all(torch.equal(next(replay)[1], y) for y in labels)
    with pytest.raises(ValueError):
        cycle_batches(EpochBatches(ds, torch.arange(3), 5, None, True, drop_last=True), 0)
