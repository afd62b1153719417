"""Bad inputs, as a new user meets them: every one must stop the command with exit code 2 and
exactly one line `diffnas: error: ...` on stderr that names the offending key, file or value,
without a traceback and without creating, changing or deleting anything on disk.

Each case runs `diffnas.cli.main(argv)` in-process with the working directory set to the test's
`tmp_path` (so default `runs/` directories would land there), after the case's own files have
been written. Everything under `tmp_path` (relative path, size, mtime) is snapshotted before
and after the call and must be unchanged. Cases that start from a real run directory get a
copy of one made once per module (a tiny NB201 search with a DARTS-PT selection in it, and a
tiny NB201 training).

A case's `phrase` (or every phrase of a tuple) must appear in the error line: the key, file or
value a good message has to name, not necessarily what the code prints today.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from diffnas.cli import main
from diffnas.spaces.published import GENOTYPES

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
FORECAST_SEARCH_CONFIG = str(REPO / "configs" / "darts_rnn_forecast.toml")
ERROR_PREFIX = "diffnas: error:"


def sets(*pairs: str) -> list[str]:
    """`--set a --set b ...`."""
    return [a for s in pairs for a in ("--set", s)]


QUIET = ["run.threads=1", "run.progress=false", "run.tensorboard=false"]
# Tiny sizes everywhere, so that a bad input that is wrongly accepted costs seconds, not hours.
TINY = [
    "data.dataset=synthetic",
    "data.limit=16",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "space.C=4",
    "space.N=1",
    "search.epochs=1",
    *QUIET,
]
SEARCH = ["search", *sets(*TINY)]
DARTS_SEARCH = ["search", *sets(*TINY, "space.name=darts", "space.layers=3")]
TRAIN_TINY = [
    "train.C=4",
    "train.N=1",
    "train.layers=3",
    "train.epochs=1",
    "data.dataset=synthetic",
    "data.limit=16",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    *QUIET,
]
TRAIN = ["train", "--genotype", "NB201_BEST", *sets(*TRAIN_TINY)]
FORECAST_TINY = [
    "train.epochs=1",
    "forecast.lookback=8",
    "forecast.horizon=2",
    "forecast.hidden=4",
    "forecast.train_windows=16",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    *QUIET,
]
FORECAST = ["train", "--task", "forecast", *sets(*FORECAST_TINY)]
FORECAST_SEARCH = [
    "search",
    "--config",
    FORECAST_SEARCH_CONFIG,
    *sets(*FORECAST_TINY[1:], "search.epochs=1"),
]
EXPORT_TINY = ["--format", "state_dict", *sets("train.C=4", "train.N=1")]

NB201_OK = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    + "+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
)
DARTS_V2_TEXT = str(GENOTYPES.get("DARTS_V2").genotype)
RNN_V2_TEXT = str(GENOTYPES.get("DARTS_RNN_V2").genotype)


# ---------------------------------------------------------------------------------------------
# Fake data files (tiny, valid unless a case breaks them)
# ---------------------------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    """An idx file: magic (whose last byte is the number of dims), dims, uint8 payload."""
    dims = b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return magic.to_bytes(4, "big") + dims + arr.astype(np.uint8).tobytes()


def write_fashion(d: Path, n: int = 20) -> Path:
    """The 4 Fashion-MNIST idx .gz files with n random 28x28 images per split."""
    d.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        images = g.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (d / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 2051)))
        (d / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))
    return d


def cifar_batch(n: int = 10, columns: int = 3072, label_key: bytes = b"labels", classes=10):
    g = np.random.default_rng(n)
    data = g.integers(0, 256, size=(n, columns), dtype=np.uint8)
    return pickle.dumps({b"data": data, label_key: [i % classes for i in range(n)]}, protocol=2)


def write_cifar10(d: Path, n: int = 10) -> Path:
    """data_batch_1..5 and test_batch with n random images each."""
    d.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(cifar_batch(n))
    return d


def write_cifar100(d: Path, n: int = 10) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):
        (d / name).write_bytes(cifar_batch(n, label_key=b"fine_labels", classes=100))
    return d


def series_text(rows: int = 60, cols: int = 2) -> str:
    """LSTNet format: no header, comma-separated numbers."""
    t = np.arange(rows)[:, None]
    values = 2 + np.sin(2 * np.pi * t / (7 + 3 * np.arange(cols)))
    return "\n".join(",".join(f"{v:.5f}" for v in r) for r in values) + "\n"


def csv_text(rows: int = 60) -> str:
    """A CSV with a `date` column and series a, b (hourly)."""
    lines = ["date,a,b"]
    for i in range(rows):
        lines.append(
            f"2020-01-{1 + i // 24:02d} {i % 24:02d}:00:00,{2 + np.sin(i / 5):.4f},{i % 7}"
        )
    return "\n".join(lines) + "\n"


def write(rel: str, content: str | bytes) -> Callable[[Path], None]:
    """Setup: write `content` to tmp_path/rel."""

    def setup(tmp: Path) -> None:
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)

    return setup


def mkdir(rel: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / rel).mkdir(parents=True)


def chain(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for s in steps:
            s(tmp)

    return setup


def fashion(rel: str, damage: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        d = write_fashion(tmp / rel)
        if damage:
            damage(d)

    return setup


def cifar10(rel: str, damage: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        d = write_cifar10(tmp / rel)
        if damage:
            damage(d)

    return setup


def truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    """Setup: cut tmp_path/rel (or dir/rel for the data damage hooks) to a fraction."""

    def setup(base: Path) -> None:
        p = base / rel
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])

    return setup


def overwrite(rel: str, content: bytes) -> Callable[[Path], None]:
    return lambda base: (base / rel).write_bytes(content)


def remove(rel: str) -> Callable[[Path], None]:
    def setup(base: Path) -> None:
        p = base / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    return setup


def garble(rel: str) -> Callable[[Path], None]:
    """Setup: the same number of bytes, all garbage."""

    def setup(base: Path) -> None:
        p = base / rel
        size = p.stat().st_size
        p.write_bytes(bytes((i * 37 + 11) % 256 for i in range(size)))

    return setup


def edit_toml(rel: str, section: str, key: str, value: str) -> Callable[[Path], None]:
    """Setup: change `key = ...` in `[section]` of a run's config.toml, as a user would."""

    def setup(tmp: Path) -> None:
        p = tmp / rel
        lines, current, done = p.read_text().splitlines(), None, False
        for i, line in enumerate(lines):
            m = re.match(r"\s*\[([^\]]+)\]", line)
            if m:
                current = m.group(1).strip()
            elif current == section and re.match(rf"\s*{re.escape(key)}\s*=", line):
                lines[i], done = f"{key} = {value}", True
        assert done, f"{key} not in [{section}] of {p}"
        p.write_text("\n".join(lines) + "\n")

    return setup


def gz(text: str) -> bytes:
    return gzip.compress(text.encode())


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    argv: list[str]
    phrase: str | tuple[str, ...]
    setup: Callable[[Path], None] | None = None
    needs: tuple[str, ...] = field(default=())  # fixture run directories copied into tmp_path


def case(id: str, argv, phrase, setup=None, needs=()):
    return pytest.param(Case(list(argv), phrase, setup, tuple(needs)), id=id)


PLAIN = write("plain.txt", "just a file\n")
GOOD_SERIES = write("series.txt", series_text())
S, T = "s-run", "t-run"  # the fixture copies: a finished search (with a selection) and a training
SEL = f"{S}/select-perturbation"

CONFIG_CASES = [
    case("config-unknown-section", [*SEARCH, *sets("serch.epochs=1")], "serch"),
    case("config-unknown-key", [*SEARCH, *sets("search.epoch=1")], "search.epoch"),
    case("config-unknown-key-train", [*TRAIN, *sets("train.lr_mn=0.1")], "train.lr_mn"),
    case("config-set-without-equals", [*SEARCH, "--set", "search.epochs"], "search.epochs"),
    case("config-set-without-section", [*SEARCH, "--set", "epochs=3"], "epochs"),
    case("config-int-is-word", [*SEARCH, *sets("search.epochs=abc")], "search.epochs"),
    case("config-int-is-float", [*SEARCH, *sets("search.epochs=1.5")], "search.epochs"),
    case("config-int-is-bool", [*SEARCH, *sets("space.C=true")], "space.C"),
    case("config-bool-is-word", [*SEARCH, *sets("run.progress=maybe")], "run.progress"),
    case("config-float-is-word", [*SEARCH, *sets("search.w_lr=fast")], "search.w_lr"),
    case("config-list-is-number", [*SEARCH, *sets("search.alpha_betas=0.5")], "search.alpha_betas"),
    case(
        "config-list-too-short", [*SEARCH, *sets("search.alpha_betas=[0.5]")], "search.alpha_betas"
    ),
    case("config-epochs-zero", [*SEARCH, *sets("search.epochs=0")], "search.epochs"),
    case("config-C-negative", [*SEARCH, *sets("space.C=-4")], "space.C"),
    case(
        "config-train-portion-above-1",
        [*SEARCH, *sets("data.train_portion=1.5")],
        "data.train_portion",
    ),
    case(
        "config-momentum-negative", [*SEARCH, *sets("search.w_momentum=-0.1")], "search.w_momentum"
    ),
    case("config-seed-negative", [*SEARCH, *sets("run.seed=-1")], "run.seed"),
    case("config-seed-too-large", [*SEARCH, *sets("run.seed=99999999999")], "run.seed"),
    case("config-batch-size-zero", [*SEARCH, *sets("data.batch_size=0")], "data.batch_size"),
    case("config-order-3", [*SEARCH, *sets("search.order=3")], "search.order"),
    case("config-unknown-space", [*SEARCH, *sets("space.name=nb202")], "space.name"),
    case("config-unknown-dataset", [*SEARCH, *sets("data.dataset=mnist")], "data.dataset"),
    case("config-unknown-device", [*SEARCH, *sets("run.device=tpu")], "run.device"),
    case("config-alpha-lr-inf", [*SEARCH, *sets("search.alpha_lr=inf")], "search.alpha_lr"),
    case("config-alpha-lr-nan", [*SEARCH, *sets("search.alpha_lr=nan")], "search.alpha_lr"),
    case("config-w-lr-nan", [*SEARCH, *sets("search.w_lr=nan")], "search.w_lr"),
    case("config-grad-clip-inf", [*SEARCH, *sets("search.grad_clip=inf")], "search.grad_clip"),
    case(
        "config-train-portion-nan", [*SEARCH, *sets("data.train_portion=nan")], "data.train_portion"
    ),
    case(
        "config-alpha-betas-nan",
        [*SEARCH, *sets("search.alpha_betas=[0.5,nan]")],
        "search.alpha_betas",
    ),
    case("config-train-lr-inf", [*TRAIN, *sets("train.lr=inf")], "train.lr"),
    case("config-drop-path-nan", [*TRAIN, *sets("train.drop_path=nan")], "train.drop_path"),
    case(
        "config-multiplier-above-steps",
        [*DARTS_SEARCH, *sets("space.steps=2", "space.multiplier=3")],
        "space.multiplier",
    ),
    case(
        "config-grow-max-nodes-below-steps",
        [
            *DARTS_SEARCH,
            *sets(
                "space.steps=3",
                "space.multiplier=3",
                "search.grower=morphism",
                "search.grow_max_nodes=2",
            ),
        ],
        "search.grow_max_nodes",
    ),
    case(
        "config-novelty-warmup-zero",
        [*SEARCH, *sets("search.strategy=novelty", "search.novelty_warmup=0")],
        "search.novelty_warmup",
    ),
    case("config-task-lm-on-nb201", [*SEARCH, *sets("search.task=lm")], "search.task"),
    case("config-train-layers-2", [*TRAIN, *sets("train.layers=2")], "train.layers"),
    case("config-train-unknown-task", ["train", "--task", "bogus_task"], "bogus_task"),
    case("config-missing-file", ["search", "--config", "nope.toml", *sets(*TINY)], "nope.toml"),
    case(
        "config-is-a-directory",
        ["search", "--config", "confdir", *sets(*TINY)],
        "confdir",
        mkdir("confdir"),
    ),
    case(
        "config-toml-syntax-error",
        ["search", "--config", "bad.toml", *sets(*TINY)],
        "bad.toml",
        write("bad.toml", "[search\nepochs = 1\n"),
    ),
    case(
        "config-toml-unquoted-string",
        ["search", "--config", "bad.toml", *sets(*TINY)],
        "bad.toml",
        write("bad.toml", "[space]\nname = nb201\n"),
    ),
    case(
        "config-toml-duplicate-key",
        ["search", "--config", "dup.toml", *sets(*TINY)],
        "dup.toml",
        write("dup.toml", "[search]\nepochs = 1\nepochs = 2\n"),
    ),
    case(
        "config-toml-not-utf8",
        ["search", "--config", "latin.toml", *sets(*TINY)],
        "latin.toml",
        write("latin.toml", b'[run]\nout = "r\xe9sum\xe9"\n'),
    ),
    case(
        "config-toml-unknown-key",
        ["search", "--config", "k.toml", *sets(*TINY)],
        "epoch",
        write("k.toml", "[search]\nepoch = 1\n"),
    ),
    case(
        "config-toml-section-not-table",
        ["search", "--config", "t.toml", *sets(*TINY)],
        "search",
        write("t.toml", "search = 3\n"),
    ),
    case(
        "config-train-missing-file",
        ["train", "--config", "nope.toml", "--genotype", "NB201_BEST"],
        "nope.toml",
    ),
]

GENOTYPE_CASES = [
    case("genotype-unknown-name", [*TRAIN[:1], "--genotype", "DARTS_V3", *TRAIN[3:]], "DARTS_V3"),
    case(
        "genotype-nb201-unknown-op",
        ["train", "--genotype", NB201_OK.replace("nor_conv_1x1", "conv_9x9"), *sets(*TRAIN_TINY)],
        "conv_9x9",
    ),
    case(
        "genotype-nb201-two-nodes",
        [
            "train",
            "--genotype",
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|",
            *sets(*TRAIN_TINY),
        ],
        "NB201",
    ),
    case(
        "genotype-nb201-bad-input-index",
        [
            "train",
            "--genotype",
            NB201_OK.replace("|nor_conv_3x3~0|+", "|nor_conv_3x3~1|+", 1),
            *sets(*TRAIN_TINY),
        ],
        "nor_conv_3x3~1",
    ),
    case(
        "genotype-nb201-missing-pipe",
        ["train", "--genotype", NB201_OK[:-1], *sets(*TRAIN_TINY)],
        "NB201",
    ),
    case(
        "genotype-nb201-empty-op",
        [
            "train",
            "--genotype",
            NB201_OK.replace("|nor_conv_3x3~0|+", "|~0|+", 1),
            *sets(*TRAIN_TINY),
        ],
        "NB201",
    ),
    case(
        "genotype-darts-unknown-op",
        [
            "train",
            "--genotype",
            DARTS_V2_TEXT.replace("sep_conv_3x3", "sep_conv_9x9", 1),
            *sets(*TRAIN_TINY),
        ],
        "sep_conv_9x9",
    ),
    case(
        "genotype-darts-truncated-text",
        ["train", "--genotype", DARTS_V2_TEXT[: len(DARTS_V2_TEXT) // 2], *sets(*TRAIN_TINY)],
        "Genotype",
    ),
    case(
        "genotype-rnn-unknown-op",
        ["info", RNN_V2_TEXT.replace("sigmoid", "softsign", 1)],
        "softsign",
    ),
    case(
        "genotype-json-truncated",
        ["train", "--genotype", "genotype.json", *sets(*TRAIN_TINY)],
        "genotype.json",
        write("genotype.json", '{"space": "nb201", "arch": "|nor_conv_3x3~0|+|'),
    ),
    case(
        "genotype-json-empty-file",
        ["train", "--genotype", "genotype.json", *sets(*TRAIN_TINY)],
        "genotype.json",
        write("genotype.json", ""),
    ),
    case(
        "genotype-json-no-arch",
        ["train", "--genotype", "g.json", *sets(*TRAIN_TINY)],
        ("g.json", "arch"),
        write("g.json", '{"space": "nb201"}\n'),
    ),
    case(
        "genotype-json-unknown-space",
        ["train", "--genotype", "g.json", *sets(*TRAIN_TINY)],
        ("g.json", "resnet"),
        write("g.json", '{"space": "resnet", "arch": "x"}\n'),
    ),
    case(
        "genotype-json-a-list",
        ["train", "--genotype", "g.json", *sets(*TRAIN_TINY)],
        "g.json",
        write("g.json", "[1, 2, 3]\n"),
    ),
    case(
        "genotype-not-utf8",
        ["train", "--genotype", "geno.json", *sets(*TRAIN_TINY)],
        "geno.json",
        write("geno.json", b"\xff\xfe\xfa\x00{garbage}\x9c"),
    ),
    case(
        "genotype-dir-without-genotype-json",
        ["train", "--genotype", "emptyrun", *sets(*TRAIN_TINY)],
        "emptyrun",
        mkdir("emptyrun"),
    ),
    case(
        "genotype-run-without-genotype-json",
        ["train", "--genotype", S, *sets(*TRAIN_TINY)],
        "genotype.json",
        remove(f"{S}/genotype.json"),
        needs=[S],
    ),
    case(
        "genotype-run-truncated-genotype-json",
        ["train", "--genotype", S, *sets(*TRAIN_TINY)],
        "genotype.json",
        truncate(f"{S}/genotype.json"),
        needs=[S],
    ),
    case(
        "genotype-missing-file",
        ["train", "--genotype", "nowhere/genotype.json", *sets(*TRAIN_TINY)],
        "nowhere/genotype.json",
    ),
    case(
        "genotype-forecast-cell-missing",
        [*FORECAST, *sets("forecast.path=series.txt", "forecast.model=darts_rnn")],
        "genotype",
        GOOD_SERIES,
    ),
    case("genotype-info-unknown-name", ["info", "BOGUS_CELL"], "BOGUS_CELL"),
]


def _empty_labels(d: Path) -> None:
    (d / "train-labels-idx1-ubyte.gz").unlink()


IMAGE_CASES = [
    case(
        "images-fashion-missing-dir",
        [*SEARCH, *sets("data.dataset=fashion_mnist", "data.data_dir=missing-dir")],
        "missing-dir",
    ),
    case(
        "images-fashion-empty-dir",
        [*SEARCH, *sets("data.dataset=fashion_mnist", "data.data_dir=empty-dir")],
        "train-images-idx3-ubyte",
        mkdir("empty-dir"),
    ),
    case(
        "images-fashion-labels-missing",
        [*SEARCH, *sets("data.dataset=fashion_mnist", "data.data_dir=fm")],
        "train-labels-idx1-ubyte",
        fashion("fm", _empty_labels),
    ),
    case(
        "images-fashion-truncated-gz",
        [*SEARCH, *sets("data.dataset=fashion_mnist", "data.data_dir=fm")],
        "train-images-idx3-ubyte.gz",
        fashion("fm", truncate("train-images-idx3-ubyte.gz")),
    ),
    case(
        "images-fashion-not-gzip",
        [*SEARCH, *sets("data.dataset=fashion_mnist", "data.data_dir=fm")],
        "train-labels-idx1-ubyte.gz",
        fashion("fm", overwrite("train-labels-idx1-ubyte.gz", b"this is not gzip data")),
    ),
    case(
        "images-fashion-truncated-payload",
        [*SEARCH, *sets("data.dataset=fashion_mnist", "data.data_dir=fm")],
        "train-images-idx3-ubyte.gz",
        fashion(
            "fm",
            overwrite(
                "train-images-idx3-ubyte.gz",
                gzip.compress(idx_bytes(np.zeros((20, 28, 28)), 2051)[:-100]),
            ),
        ),
    ),
    case(
        "images-fashion-wrong-magic",
        [*SEARCH, *sets("data.dataset=fashion_mnist", "data.data_dir=fm")],
        "train-images-idx3-ubyte.gz",
        fashion(
            "fm",
            overwrite("train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(np.zeros(20), 2049))),
        ),
    ),
    case(
        "images-fashion-label-count-mismatch",
        [*SEARCH, *sets("data.dataset=fashion_mnist", "data.data_dir=fm")],
        "train-labels-idx1-ubyte.gz",
        fashion(
            "fm",
            overwrite("train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.zeros(19), 2049))),
        ),
    ),
    case(
        "images-fashion-label-out-of-range",
        [*SEARCH, *sets("data.dataset=fashion_mnist", "data.data_dir=fm")],
        "train-labels-idx1-ubyte.gz",
        fashion(
            "fm",
            overwrite(
                "train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.full(20, 12), 2049))
            ),
        ),
    ),
    case(
        "images-fashion-test-truncated-train-cmd",
        [*TRAIN, *sets("data.dataset=fashion_mnist", "data.data_dir=fm")],
        "t10k-images-idx3-ubyte.gz",
        fashion("fm", truncate("t10k-images-idx3-ubyte.gz")),
    ),
    case(
        "images-cifar10-missing-dir",
        [*SEARCH, *sets("data.dataset=cifar10", "data.data_dir=missing-dir")],
        "missing-dir",
    ),
    case(
        "images-cifar10-empty-dir",
        [*SEARCH, *sets("data.dataset=cifar10", "data.data_dir=empty-dir")],
        "data_batch_1",
        mkdir("empty-dir"),
    ),
    case(
        "images-cifar10-truncated-pickle",
        [*SEARCH, *sets("data.dataset=cifar10", "data.data_dir=c10")],
        "data_batch_3",
        cifar10("c10", truncate("data_batch_3")),
    ),
    case(
        "images-cifar10-garbage-pickle",
        [*SEARCH, *sets("data.dataset=cifar10", "data.data_dir=c10")],
        "data_batch_2",
        cifar10("c10", garble("data_batch_2")),
    ),
    case(
        "images-cifar10-foreign-global",
        [*SEARCH, *sets("data.dataset=cifar10", "data.data_dir=c10")],
        "data_batch_1",
        cifar10("c10", overwrite("data_batch_1", pickle.dumps({b"data": os.system}, 2))),
    ),
    case(
        "images-cifar10-wrong-columns",
        [*SEARCH, *sets("data.dataset=cifar10", "data.data_dir=c10")],
        "data_batch_4",
        cifar10("c10", overwrite("data_batch_4", cifar_batch(10, columns=100))),
    ),
    case(
        "images-cifar10-no-labels-key",
        [*SEARCH, *sets("data.dataset=cifar10", "data.data_dir=c10")],
        "data_batch_5",
        cifar10("c10", overwrite("data_batch_5", cifar_batch(10, label_key=b"fine_labels"))),
    ),
    case(
        "images-cifar10-test-missing-train-cmd",
        [*TRAIN, *sets("data.dataset=cifar10", "data.data_dir=c10")],
        "test_batch",
        cifar10("c10", remove("test_batch")),
    ),
    case(
        "images-cifar100-garbage",
        [*SEARCH, *sets("data.dataset=cifar100", "data.data_dir=c100")],
        "c100/train",
        chain(lambda t: write_cifar100(t / "c100"), garble("c100/train")),
    ),
    case("images-limit-empty-train-split", [*SEARCH, *sets("data.limit=1")], "data.limit"),
    case(
        "images-portion-empty-train-split",
        [*SEARCH, *sets("data.limit=50", "data.train_portion=0.01")],
        "data.train_portion",
    ),
]

FORECAST_CASES = [
    case("forecast-path-empty", FORECAST, "forecast.path"),
    case("forecast-missing-file", [*FORECAST, *sets("forecast.path=nofile.txt")], "nofile.txt"),
    case(
        "forecast-path-is-dir",
        [*FORECAST, *sets("forecast.path=seriesdir")],
        "seriesdir",
        mkdir("seriesdir"),
    ),
    case(
        "forecast-empty-txt",
        [*FORECAST, *sets("forecast.path=empty.txt")],
        "empty.txt",
        write("empty.txt", ""),
    ),
    case(
        "forecast-empty-csv",
        [*FORECAST, *sets("forecast.path=empty.csv", "forecast.format=csv")],
        "empty.csv",
        write("empty.csv", ""),
    ),
    case(
        "forecast-header-only-csv",
        [*FORECAST, *sets("forecast.path=header.csv", "forecast.format=csv")],
        "header.csv",
        write("header.csv", "date,a,b\n"),
    ),
    case(
        "forecast-non-numeric-cell",
        [*FORECAST, *sets("forecast.path=bad.txt")],
        ("bad.txt", "abc"),
        write("bad.txt", series_text().replace("\n", "\n1.0,abc\n", 1)),
    ),
    case(
        "forecast-nan-cell",
        [*FORECAST, *sets("forecast.path=nan.txt")],
        "nan.txt",
        write("nan.txt", "1.0,2.0\n" * 5 + "nan,2.0\n" + "1.0,2.0\n" * 50),
    ),
    case(
        "forecast-empty-cell",
        [*FORECAST, *sets("forecast.path=gap.txt")],
        "gap.txt",
        write("gap.txt", "1.0,2.0\n" * 5 + "1.0,\n" + "1.0,2.0\n" * 50),
    ),
    case(
        "forecast-ragged-rows",
        [*FORECAST, *sets("forecast.path=ragged.txt")],
        "ragged.txt",
        write("ragged.txt", "1.0,2.0\n" * 5 + "1.0,2.0,3.0\n" + "1.0,2.0\n" * 50),
    ),
    case(
        "forecast-csv-non-numeric",
        [*FORECAST, *sets("forecast.path=bad.csv", "forecast.format=csv")],
        ("bad.csv", "oops"),
        write("bad.csv", csv_text().replace(",3\n", ",oops\n", 1)),
    ),
    case(
        "forecast-csv-unknown-column",
        [
            *FORECAST,
            *sets("forecast.path=s.csv", "forecast.format=csv", 'forecast.columns=["nosuch"]'),
        ],
        "nosuch",
        write("s.csv", csv_text()),
    ),
    case(
        "forecast-ett-without-date",
        [*FORECAST, *sets("forecast.path=nodate.csv", "forecast.format=ett")],
        "date",
        write("nodate.csv", "a,b\n" + "1.0,2.0\n" * 60),
    ),
    case(
        "forecast-corrupt-gz",
        [*FORECAST, *sets("forecast.path=series.txt.gz")],
        "series.txt.gz",
        write("series.txt.gz", gz(series_text())[:40]),
    ),
    case(
        "forecast-not-utf8",
        [*FORECAST, *sets("forecast.path=latin.csv", "forecast.format=csv")],
        "latin.csv",
        write("latin.csv", b"date,caf\xe9\n2020-01-01 00:00:00,1\n" * 3),
    ),
    case(
        "forecast-horizon-longer-than-series",
        [*FORECAST, *sets("forecast.path=series.txt", "forecast.horizon=100")],
        "forecast.horizon",
        GOOD_SERIES,
    ),
    case(
        "forecast-lookback-longer-than-series",
        [*FORECAST, *sets("forecast.path=series.txt", "forecast.lookback=500")],
        "forecast.lookback",
        GOOD_SERIES,
    ),
    case(
        "forecast-search-missing-file",
        [*FORECAST_SEARCH, *sets("forecast.path=nofile.txt")],
        "nofile.txt",
    ),
    case(
        "forecast-search-non-numeric",
        [*FORECAST_SEARCH, *sets("forecast.path=bad.txt")],
        ("bad.txt", "abc"),
        write("bad.txt", series_text().replace("\n", "\n1.0,abc\n", 1)),
    ),
    case(
        "forecast-search-horizon-longer-than-series",
        [*FORECAST_SEARCH, *sets("forecast.path=series.txt", "forecast.horizon=100")],
        "forecast.horizon",
        GOOD_SERIES,
    ),
    case(
        "lm-missing-corpus-dir",
        ["train", "--task", "lm", *sets("lm.data_dir=nocorpus", "train.epochs=1", *QUIET)],
        "nocorpus",
    ),
    case(
        "lm-empty-corpus-dir",
        ["train", "--task", "lm", *sets("lm.data_dir=corpus", "train.epochs=1", *QUIET)],
        "train.txt",
        mkdir("corpus"),
    ),
]

RUN_DIR_CASES = [
    case("resume-search-missing-dir", ["search", "--resume", "nosuchdir"], "nosuchdir"),
    case("resume-search-a-file", ["search", "--resume", "plain.txt"], "plain.txt", PLAIN),
    case(
        "resume-search-with-set",
        ["search", "--resume", S, *sets("search.epochs=2")],
        "--resume",
        needs=[S],
    ),
    case("resume-search-on-training-dir", ["search", "--resume", T], (T, "train"), needs=[T]),
    case(
        "resume-search-on-selection-dir",
        ["search", "--resume", SEL],
        "select-perturbation",
        needs=[S],
    ),
    case("resume-train-on-search-dir", ["train", "--resume", S], (S, "search"), needs=[S]),
    case(
        "resume-train-on-selection-dir",
        ["train", "--resume", SEL],
        "select-perturbation",
        needs=[S],
    ),
    case(
        "resume-search-without-checkpoint",
        ["search", "--resume", S],
        "checkpoint.pt",
        remove(f"{S}/checkpoint.pt"),
        needs=[S],
    ),
    case(
        "resume-train-without-checkpoint",
        ["train", "--resume", T],
        "checkpoint.pt",
        remove(f"{T}/checkpoint.pt"),
        needs=[T],
    ),
    case(
        "resume-select-without-checkpoint",
        ["select", S, "--method", "perturbation", "--resume"],
        "checkpoint.pt",
        chain(remove(f"{SEL}/checkpoint.pt"), remove(f"{SEL}/checkpoint.prev.pt")),
        needs=[S],
    ),
    case(
        "resume-select-never-started",
        ["select", S, "--method", "magnitude", "--resume"],
        "select-magnitude",
        needs=[S],
    ),
    case(
        "resume-search-truncated-checkpoint",
        ["search", "--resume", S],
        "checkpoint.pt",
        truncate(f"{S}/checkpoint.pt"),
        needs=[S],
    ),
    case(
        "resume-search-garbage-checkpoint",
        ["search", "--resume", S],
        "checkpoint.pt",
        garble(f"{S}/checkpoint.pt"),
        needs=[S],
    ),
    case(
        "resume-train-truncated-checkpoint",
        ["train", "--resume", T],
        "checkpoint.pt",
        truncate(f"{T}/checkpoint.pt"),
        needs=[T],
    ),
    case(
        "resume-train-empty-checkpoint",
        ["train", "--resume", T],
        "checkpoint.pt",
        write(f"{T}/checkpoint.pt", b""),
        needs=[T],
    ),
    case(
        "resume-search-after-C-changed",
        ["search", "--resume", S],
        "space.C",
        edit_toml(f"{S}/config.toml", "space", "C", "8"),
        needs=[S],
    ),
    case(
        "resume-train-after-C-changed",
        ["train", "--resume", T],
        "train.C",
        edit_toml(f"{T}/config.toml", "train", "C", "8"),
        needs=[T],
    ),
    case(
        "resume-search-config-deleted",
        ["search", "--resume", S],
        "config.toml",
        remove(f"{S}/config.toml"),
        needs=[S],
    ),
    case(
        "resume-train-config-broken",
        ["train", "--resume", T],
        "config.toml",
        write(f"{T}/config.toml", "[train\nC = 4\n"),
        needs=[T],
    ),
    case(
        "select-on-training-dir", ["select", T, "--method", "magnitude"], (T, "search"), needs=[T]
    ),
    case(
        "select-on-selection-dir",
        ["select", SEL, "--method", "magnitude"],
        "select-perturbation",
        needs=[S],
    ),
    case(
        "select-on-non-run-dir",
        ["select", "notarun", "--method", "magnitude"],
        "notarun",
        mkdir("notarun"),
    ),
    case("select-on-missing-dir", ["select", "nosuchdir", "--method", "magnitude"], "nosuchdir"),
    case("select-on-a-file", ["select", "plain.txt", "--method", "magnitude"], "plain.txt", PLAIN),
    case(
        "select-unknown-method",
        ["select", S, "--method", "bogus_method"],
        "bogus_method",
        needs=[S],
    ),
    case(
        "select-set-search-key",
        ["select", S, "--method", "magnitude", *sets("search.epochs=3")],
        "search.epochs",
        needs=[S],
    ),
    case(
        "select-search-without-checkpoint",
        ["select", S, "--method", "magnitude"],
        "checkpoint.pt",
        remove(f"{S}/checkpoint.pt"),
        needs=[S],
    ),
    case(
        "select-search-truncated-checkpoint",
        ["select", S, "--method", "magnitude"],
        "checkpoint.pt",
        truncate(f"{S}/checkpoint.pt"),
        needs=[S],
    ),
    case(
        "select-unfinished-search",
        ["select", S, "--method", "magnitude"],
        S,
        edit_toml(f"{S}/config.toml", "search", "epochs", "3"),
        needs=[S],
    ),
]

OUT_CASES = [
    case("out-search-under-file", [*SEARCH, "--out", "plain.txt/run"], "plain.txt", PLAIN),
    case("out-search-is-file", [*SEARCH, "--out", "plain.txt"], "plain.txt", PLAIN),
    case("out-search-existing-training-run", [*SEARCH, "--out", T], T, needs=[T]),
    case("out-train-under-file", [*TRAIN, "--out", "plain.txt/run"], "plain.txt", PLAIN),
    case("out-train-existing-search-run", [*TRAIN, "--out", S], S, needs=[S]),
    case(
        "out-select-under-file",
        ["select", S, "--method", "magnitude", "--out", "plain.txt/sel"],
        "plain.txt",
        PLAIN,
        needs=[S],
    ),
    case(
        "out-report-under-file",
        ["report", S, "--out", "plain.txt/rep"],
        "plain.txt",
        PLAIN,
        needs=[S],
    ),
    case("out-report-is-file", ["report", S, "--out", "plain.txt"], "plain.txt", PLAIN, needs=[S]),
    case(
        "out-export-genotype-under-file",
        ["export", "NB201_BEST", *EXPORT_TINY, "--out", "plain.txt/net.pt"],
        "plain.txt",
        PLAIN,
    ),
    case(
        "out-export-run-under-file",
        ["export", T, "--format", "state_dict", "--out", "plain.txt/net.pt"],
        "plain.txt",
        PLAIN,
        needs=[T],
    ),
    case(
        "out-sweep-under-file",
        ["sweep", "--seeds", "0", "--jobs", "1", *sets(*TINY), "--out", "plain.txt/sw"],
        "plain.txt",
        PLAIN,
    ),
]

COMMAND_CASES = [
    case("info-classes-zero", ["info", "NB201_BEST", "--classes", "0"], "--classes"),
    case("info-classes-negative", ["info", "DARTS_V2", "--classes", "-3"], "--classes"),
    case("info-input-two-dims", ["info", "NB201_BEST", "--input", "3x32"], "--input"),
    case("info-input-zero", ["info", "NB201_BEST", "--input", "0x32x32"], "--input"),
    case("info-input-four-dims", ["info", "NB201_BEST", "--input", "3x32x32x1"], "--input"),
    case("info-input-words", ["info", "NB201_BEST", "--input", "cifar"], "--input"),
    case("info-vocab-zero", ["info", "DARTS_RNN_V2", "--vocab", "0"], "--vocab"),
    case("info-train-C-zero", ["info", "NB201_BEST", *sets("train.C=0")], "train.C"),
    case(
        "export-classes-zero", ["export", "NB201_BEST", *EXPORT_TINY, "--classes", "0"], "--classes"
    ),
    case(
        "export-input-bad", ["export", "NB201_BEST", *EXPORT_TINY, "--input", "3x0x32"], "--input"
    ),
    case("export-unknown-genotype", ["export", "BOGUS_CELL", *EXPORT_TINY], "BOGUS_CELL"),
    case(
        "export-run-truncated-checkpoint",
        ["export", T, "--format", "state_dict"],
        "checkpoint.pt",
        truncate(f"{T}/checkpoint.pt"),
        needs=[T],
    ),
    case(
        "bench-unknown-op",
        ["bench", "nb201", NB201_OK.replace("nor_conv_1x1", "bogus_op")],
        "bogus_op",
    ),
    case(
        "bench-two-nodes", ["bench", "nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|"], "NB201"
    ),
    case("bench-no-pipes", ["bench", "nb201", "nor_conv_3x3~0"], "nor_conv_3x3~0"),
    case("bench-darts-genotype", ["bench", "nb201", "DARTS_V2"], "DARTS_V2"),
    case("bench-non-run-dir", ["bench", "nb201", "notarun"], "notarun", mkdir("notarun")),
    case(
        "bench-run-without-genotype",
        ["bench", "nb201", S],
        "genotype.json",
        remove(f"{S}/genotype.json"),
        needs=[S],
    ),
    case("report-non-run-dir", ["report", "notarun"], "notarun", mkdir("notarun")),
    case("report-missing-dir", ["report", "nosuchdir"], "nosuchdir"),
    case("report-a-file", ["report", "plain.txt"], "plain.txt", PLAIN),
    case("sweep-seeds-reversed", ["sweep", "--seeds", "3-1", *sets(*TINY)], "--seeds"),
    case("sweep-seeds-word", ["sweep", "--seeds", "all", *sets(*TINY)], "--seeds"),
    case("sweep-seeds-negative", ["sweep", "--seeds=-1", *sets(*TINY)], "--seeds"),
    case("sweep-seeds-duplicate", ["sweep", "--seeds", "0,0", *sets(*TINY)], "--seeds"),
    case("sweep-seeds-empty", ["sweep", "--seeds", "", *sets(*TINY)], "--seeds"),
    case("sweep-seeds-float", ["sweep", "--seeds", "1.5", *sets(*TINY)], "--seeds"),
    case("sweep-seeds-open-range", ["sweep", "--seeds", "0-", *sets(*TINY)], "--seeds"),
    case(
        "sweep-bad-config-key",
        ["sweep", "--seeds", "0", *sets(*TINY, "search.epochs=0")],
        "search.epochs",
    ),
    case("sweep-missing-config", ["sweep", "--seeds", "0", "--config", "nope.toml"], "nope.toml"),
]

ALL_CASES = [
    *CONFIG_CASES,
    *GENOTYPE_CASES,
    *IMAGE_CASES,
    *FORECAST_CASES,
    *RUN_DIR_CASES,
    *OUT_CASES,
    *COMMAND_CASES,
]


# ---------------------------------------------------------------------------------------------
# Fixtures: the real run directories, made once
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A finished 1-epoch NB201 search with a DARTS-PT selection (`select-perturbation`) in
    it, and a finished 1-epoch NB201_BEST training; copied into each test that needs them."""
    root = tmp_path_factory.mktemp("bad-inputs-runs")
    search, train = root / S, root / T
    assert main([*SEARCH, *sets("space.name=nb201"), "--out", str(search)]) == 0
    select = ["select", str(search), "--method", "perturbation"]
    assert main([*select, *sets("select.proj_intv=1", "select.criterion=loss")]) == 0
    assert (search / "select-perturbation" / "checkpoint.pt").is_file()
    assert main([*TRAIN, "--out", str(train)]) == 0
    return {S: search, T: train}


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    """(kind, size, mtime_ns) of every file and directory under root, by relative path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "dir" if p.is_dir() else "file"
            out[str(p.relative_to(root))] = (
                kind,
                None if kind == "dir" else st.st_size,
                st.st_mtime_ns,
            )
    return out


def describe_changes(before: dict, after: dict) -> list[str]:
    created = sorted(set(after) - set(before))
    deleted = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])

    def short(paths):
        # A created directory's contents are implied; list the top-most paths only, with what
        # they hold.
        top = [p for p in paths if not any(p.startswith(q + os.sep) for q in paths if q != p)]
        shown = []
        for p in top[:6]:
            inside = [q for q in paths if q.startswith(p + os.sep)]
            kind = (after.get(p) or before.get(p))[0]
            if kind == "dir":
                what = f"{len(inside)} entries: {', '.join(inside[:3])}" if inside else "empty"
                p = f"{p}/ ({what})"
            shown.append(p)
        return ", ".join(shown) + (f" (+{len(top) - 6} more)" if len(top) > 6 else "")

    problems = []
    if created:
        problems.append(f"created: {short(created)}")
    if deleted:
        problems.append(f"deleted: {short(deleted)}")
    if changed:
        problems.append(f"changed: {', '.join(changed[:6])}")
    return problems


def innermost_src_frame(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/src/diffnas/" in f.filename]
    if not frames:
        frames = traceback.extract_tb(exc.__traceback__)[-1:]
    if not frames:
        return "?"
    f = frames[-1]
    name = f.filename.split("/src/", 1)[-1]
    return f"{name}:{f.lineno} in {f.name}"


@pytest.mark.parametrize("c", ALL_CASES)
def test_bad_input(c: Case, tmp_path, monkeypatch, capsys, request):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIFFNAS_DATA", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    if c.needs:
        fixture_runs = request.getfixturevalue("runs")
        for name in c.needs:
            shutil.copytree(fixture_runs[name], tmp_path / name)
    if c.setup:
        c.setup(tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()

    problems: list[str] = []
    rc = None
    try:
        rc = main(c.argv)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit included: main() must return
        msg = str(e).splitlines()[0][:300] if str(e) else ""
        problems.append(f"traceback: {type(e).__name__}: {msg} [at {innermost_src_frame(e)}]")
    out, err = capsys.readouterr()

    if rc is not None:
        if rc == 0:
            problems.append("rc=0 (accepted)")
        elif rc != 2:
            problems.append(f"rc={rc} (user errors exit 2)")
    if rc is not None or not problems:
        error_lines = [line for line in err.splitlines() if line.startswith(ERROR_PREFIX)]
        phrases = (c.phrase,) if isinstance(c.phrase, str) else c.phrase
        if len(error_lines) != 1:
            problems.append(f"{len(error_lines)} lines starting with {ERROR_PREFIX!r} on stderr")
        else:
            missing = [p for p in phrases if p not in error_lines[0]]
            if missing:
                problems.append(f"error line lacks {missing}: {error_lines[0][:300]!r}")
    problems += describe_changes(before, snapshot(tmp_path))
    print(f"rc={rc}\nstderr:\n{err}")  # shown with -rP (passes) and on failures
    if problems:
        tail = "\n".join(err.strip().splitlines()[-6:])
        pytest.fail(
            "; ".join(problems) + (f"\n--- stderr tail:\n{tail}" if tail else ""), pytrace=False
        )


def test_there_are_enough_cases():
    assert len(ALL_CASES) >= 70


# ---------------------------------------------------------------------------------------------
# Controls: the undamaged fakes load, so each damaged one fails for its damage alone
# ---------------------------------------------------------------------------------------------


def test_control_fake_image_files_load(tmp_path):
    from diffnas.data.images import load_images

    write_fashion(tmp_path / "fm")
    write_cifar10(tmp_path / "c10")
    write_cifar100(tmp_path / "c100")
    assert len(load_images("fashion_mnist", "train", str(tmp_path / "fm"))) == 20
    assert len(load_images("fashion_mnist", "test", str(tmp_path / "fm"))) == 20
    assert len(load_images("cifar10", "train", str(tmp_path / "c10"))) == 50
    assert len(load_images("cifar10", "test", str(tmp_path / "c10"))) == 10
    assert len(load_images("cifar100", "train", str(tmp_path / "c100"))) == 10


def test_control_fake_series_files_load(tmp_path):
    from diffnas.data.series import load_series

    (tmp_path / "series.txt").write_text(series_text())
    (tmp_path / "s.csv").write_text(csv_text())
    assert len(load_series(tmp_path / "series.txt", "lstnet")) == 60
    assert len(load_series(tmp_path / "s.csv", "csv")) == 60


def test_control_tiny_forecast_training_runs(tmp_path, monkeypatch, capsys):
    """The forecast cases' settings train on the undamaged series, so the horizon and
    lookback cases fail for their value alone."""
    monkeypatch.chdir(tmp_path)
    GOOD_SERIES(tmp_path)
    assert main([*FORECAST, *sets("forecast.path=series.txt"), "--out", "fc"]) == 0
    assert (tmp_path / "fc" / "result.json").is_file()
