"""Your own images: image folders and .npz arrays, and the DARTS ImageNet network."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffnas.cli import main
from diffnas.data import DataFormatError, DataNotFoundError, load_images
from diffnas.runs.config import DataConfig, TrainConfig
from diffnas.spaces.final import build_final_network, count_params
from diffnas.spaces.published import GENOTYPES

pytestmark = pytest.mark.usefixtures("one_thread")


def _image(path: Path, size: tuple[int, int], mode: str, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    a = g.integers(0, 256, size=shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a, mode).save(path)
    return a


def write_folder(root: Path, mode: str = "RGB", val: bool = False, n: int = 5) -> Path:
    """train/<class>/ with PNG and JPEG files of several sizes (and val/ when asked)."""
    for split in ("train", "val") if val else ("train",):
        for c, name in enumerate(["zebra", "cat", "dog"]):  # sorted: cat, dog, zebra
            for i in range(n):
                suffix = ".png" if i % 2 else ".jpg"
                size = (20 + 4 * (i % 3), 16 + 2 * c)
                _image(root / split / name / f"{i}{suffix}", size, mode, seed=100 * c + i)
    return root


def _data(**kw) -> DataConfig:
    return DataConfig(**{"dataset": "folder", "image_size": 12, **kw})


def test_folder_classes_are_sorted_folder_names_and_images_are_resized(tmp_path):
    root = write_folder(tmp_path / "imgs", val=True)
    ds = load_images("folder", "train", str(root), _data())
    assert ds.num_classes == 3 and ds.x.shape == (15, 3, 12, 12) and ds.x.dtype == torch.uint8
    # cat = 0 (written second), dog = 1, zebra = 2: class folders sorted by name.
    assert ds.y.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    one = np.asarray(Image.open(root / "train" / "cat" / "1.png").convert("RGB").resize((12, 12)))
    assert ds.x[1].shape == torch.Size([3, 12, 12]) and ds.x[1].float().mean() > 0
    assert one.shape == (12, 12, 3)
    test = load_images("folder", "test", str(root), _data())
    assert len(test) == 15 and test.mean == ds.mean  # normalised with the training statistics


def test_folder_mean_and_std_equal_a_direct_computation(tmp_path):
    root = write_folder(tmp_path / "imgs", mode="L")
    ds = load_images("folder", "train", str(root), _data(holdout=0.0))
    assert ds.in_channels == 1
    direct = []
    for c in ("cat", "dog", "zebra"):
        for p in sorted((root / "train" / c).iterdir()):
            im = Image.open(p).convert("L")
            w, h = im.size
            s = 12 / min(w, h)
            im = im.resize((max(12, round(w * s)), max(12, round(h * s))))
            w, h = im.size
            im = im.crop(((w - 12) // 2, (h - 12) // 2, (w - 12) // 2 + 12, (h - 12) // 2 + 12))
            direct.append(np.asarray(im, dtype=np.float64) / 255)
    direct = np.stack(direct)
    assert ds.mean[0] == pytest.approx(direct.mean(), abs=1e-9)
    assert ds.std[0] == pytest.approx(direct.std(ddof=1), abs=1e-9)


def test_folder_holdout_is_seeded_disjoint_and_the_same_every_time(tmp_path):
    root = write_folder(tmp_path / "imgs", n=10)
    data = _data(holdout=0.2)
    a = load_images("folder", "test", str(root), data)
    b = load_images("folder", "test", str(root), data)
    train = load_images("folder", "train", str(root), data)
    assert torch.equal(a.x, b.x) and len(a) == 6 and len(train) == 24  # 2 of 10 per class
    rows = {tuple(x.flatten().tolist()) for x in train.x}
    assert not any(tuple(x.flatten().tolist()) in rows for x in a.x)


@pytest.mark.parametrize(
    "damage, phrase",
    [
        (
            lambda r: (r / "train" / "cat" / "0.jpg").write_bytes(
                (r / "train" / "cat" / "0.jpg").read_bytes()[:60]
            ),
            "0.jpg",
        ),
        (lambda r: (r / "train" / "dog" / "9.png").write_text("not an image"), "9.png"),
        (lambda r: _image(r / "train" / "dog" / "gray.png", (20, 20), "L", 1), "mixed modes"),
    ],
    ids=["truncated-jpeg", "not-an-image", "mixed-modes"],
)
def test_bad_image_files_error_or_are_skipped(tmp_path, damage, phrase):
    root = write_folder(tmp_path / "imgs")
    damage(root)
    files = len(list((root / "train").glob("*/*")))
    with pytest.raises(DataFormatError, match=phrase):
        load_images("folder", "train", str(root), _data(holdout=0.0))
    with pytest.warns(UserWarning, match="skipped 1 bad image file"):
        ds = load_images("folder", "train", str(root), _data(holdout=0.0, skip_bad_files=True))
    assert len(ds) == files - 1


def test_folder_layout_errors(tmp_path):
    root = write_folder(tmp_path / "imgs")
    (root / "train" / "empty").mkdir()
    with pytest.raises(DataFormatError, match="empty class folder"):
        load_images("folder", "train", str(root), _data())
    with pytest.raises(DataNotFoundError, match="no train/ folder"):
        load_images("folder", "train", str(tmp_path), _data())
    sizes = write_folder(tmp_path / "sizes")
    with pytest.raises(DataFormatError, match="set data.image_size"):
        load_images("folder", "train", str(sizes), _data(image_size=0))


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW", "float"])
def test_arrays_layouts_give_the_same_images(tmp_path, layout):
    g = np.random.default_rng(0)
    nchw = g.integers(0, 256, size=(6, 3 if layout != "NHW" else 1, 8, 8), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    x = {
        "NHWC": nchw.transpose(0, 2, 3, 1),
        "NCHW": nchw,
        "NHW": nchw[:, 0] if layout == "NHW" else None,
        "float": nchw.astype(np.float32) / 255,
    }[layout]
    path = _npz(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    ds = load_images("arrays", "train", str(path))
    assert torch.equal(ds.x, torch.from_numpy(nchw)) and ds.num_classes == 3
    assert len(load_images("arrays", "test", str(tmp_path))) == 2  # the directory's one .npz
    assert ds.mean[0] == pytest.approx(nchw[:, 0].astype(np.float64).mean() / 255)


@pytest.mark.parametrize(
    "arrays, phrase",
    [
        ({"x_train": np.zeros((4, 8, 8, 3), np.uint8)}, "no y_train"),
        ({"x_train": np.zeros((4, 8, 8, 3), np.uint8), "y_train": np.zeros(3, int)}, "one label"),
        ({"x_train": np.zeros((4, 8, 8, 3), np.uint8), "y_train": np.full(4, 0.5)}, "integer"),
        (
            {"x_train": np.zeros((4, 8, 8, 3), np.uint8), "y_train": np.array([0, 1, -1, 0])},
            r"\[0, 2\)",
        ),
        ({"x_train": np.full((4, 8, 8, 3), 2.0), "y_train": np.zeros(4, int)}, "outside"),
        ({"x_train": np.zeros((4, 8, 8, 5), np.uint8), "y_train": np.zeros(4, int)}, "channel"),
        ({"x_train": np.zeros((4, 8), np.uint8), "y_train": np.zeros(4, int)}, "shape"),
    ],
    ids=["no-labels", "label-count", "float-labels", "negative", "float-range", "channels", "2d"],
)
def test_bad_arrays_are_clear_errors(tmp_path, arrays, phrase):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataFormatError, match=phrase) as info:
        load_images("arrays", "train", str(path))
    assert str(path) in str(info.value)


def test_search_and_train_on_an_image_folder(tmp_path, capsys):
    root = write_folder(tmp_path / "imgs", n=8)
    common = [
        "data.dataset=folder",
        f"data.data_dir={root}",
        "data.image_size=12",
        "data.batch_size=4",
        "run.threads=1",
        "run.progress=false",
        "run.tensorboard=false",
    ]
    search = [
        "search",
        "--out",
        str(tmp_path / "s"),
        "--set",
        "space.C=4",
        "--set",
        "space.N=1",
        "--set",
        "search.epochs=1",
    ]
    assert main([*search, *[a for s in common for a in ("--set", s)]]) == 0
    train = [
        "train",
        "--genotype",
        str(tmp_path / "s"),
        "--out",
        str(tmp_path / "t"),
        "--set",
        "train.C=4",
        "--set",
        "train.N=1",
        "--set",
        "train.epochs=1",
    ]
    assert main([*train, *[a for s in common for a in ("--set", s)]]) == 0
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    assert 0 <= result["test_acc"] <= 100


def test_darts_imagenet_network_has_the_papers_size_and_runs():
    cfg = TrainConfig(C=48, layers=14, stem="imagenet", auxiliary_weight=0.4, drop_path=0.0)
    model = build_final_network(GENOTYPES.get("DARTS_V2").genotype, cfg, 3, 1000)
    assert abs(count_params(model) - 4.7e6) / 4.7e6 < 0.03
    small = TrainConfig(C=8, layers=5, stem="imagenet", auxiliary_weight=0.4, drop_path=0.1)
    net = build_final_network(GENOTYPES.get("DARTS_V2").genotype, small, 3, 7).train()
    net.drop_path_prob = 0.1
    logits, aux = net(torch.randn(2, 3, 64, 64), with_aux=True)
    assert logits.shape == aux.shape == (2, 7)
    (logits.sum() + aux.sum()).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)
