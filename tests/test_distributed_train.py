"""Data-parallel final training over 2 gloo processes on CPU: replicas stay bitwise identical
(drop-path and the auxiliary head included), 2 processes train what 1 process trains on the same
global batches (float64), a checkpoint resumes across a change of world size, only rank 0
writes, and the single-process tasks refuse torchrun before any run directory exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import spawn, torchrun

from diffnas.cli import main
from diffnas.data import EpochBatches, load_images
from diffnas.runs import distributed
from diffnas.runs.config import load_config
from diffnas.runs.rundir import RunDir
from diffnas.spaces.final import build_final_network
from diffnas.spaces.genotypes import load_genotype
from diffnas.train import train_image
from diffnas.train.image import ImageTrainer

NB201_CELL = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"
)
TINY = [
    'data.dataset="synthetic"',
    "data.limit=64",
    "data.batch_size=16",
    "data.eval_batch_size=100",  # 256 test images: batches 100, 100, 56, each split 2 ways
    "data.augment=true",
    f'train.genotype="{NB201_CELL}"',
    "train.C=4",
    "train.N=1",
    "train.epochs=3",
    "train.lr=0.05",
    "train.grad_clip=5",
    'run.dtype="float64"',
    "run.seed=5",
    "run.threads=1",
    "run.progress=false",
    "run.tensorboard=false",
]
RTOL, ATOL = 1e-9, 1e-12  # float64


def _cfg(out: Path, settings: list[str]):
    return load_config(
        str(Path(__file__).parents[1] / "src/diffnas/configs/train_nb201.toml"),
        [*settings, f"run.out={json.dumps(str(out))}"],
    )


def _train(out: Path, settings: list[str], stop_after: int | None = None) -> None:
    """A fresh single-process train_image in `out`."""
    cfg = _cfg(out, settings)
    train_image(cfg, RunDir(out).create(cfg, "train"), log=lambda _: None, stop_after=stop_after)


def _train_job(out: Path, settings: list[str], stop_after: int | None) -> None:
    """Per rank: a fresh train_image in `out` (rank 0 creates it), as the CLI does."""
    cfg = _cfg(out, settings)
    run = RunDir(out)
    if distributed.is_main():
        run.create(cfg, "train")
    distributed.barrier()
    train_image(cfg, run, log=lambda _: None, stop_after=stop_after)


def _steps_job(path: Path) -> None:
    """Per rank: steps of a DARTS final network with drop-path and the auxiliary head on
    shards of the same global batches; after each, are all replicas bitwise equal?"""
    cfg = load_config(
        None,
        [
            'data.dataset="synthetic"',
            "train.genotype=DARTS_V2",
            "train.C=4",
            "train.layers=3",
            "train.drop_path=0.3",
            "train.auxiliary_weight=0.4",
            "run.seed=1",
        ],
    )
    torch.manual_seed(0)
    ds = load_images("synthetic", "train")
    model = build_final_network(load_genotype("DARTS_V2"), cfg.train, 3, 10)
    model = distributed.convert_sync_batchnorm(model)
    distributed.broadcast_module(model)
    trainer = ImageTrainer(model, cfg.train)
    trainer.start_epoch(2)  # drop-path rate > 0
    # Each rank draws its own drop-path masks.
    torch.manual_seed(100 + distributed.rank())
    batches = EpochBatches(ds, torch.arange(64), 16, None, True, torch.device("cpu"))
    same = []
    for batch in batches.epoch(0):
        trainer.step(*distributed.shard(batch))
        same.append(distributed.replicas_equal([*model.parameters(), *model.buffers()]))
    if distributed.is_main():
        torch.save({"same": same}, path)


def _model(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["trainer"]


def _records(run_dir: Path) -> list[dict]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "epoch_time_s")} for r in recs]


def _assert_same_training(got: Path, ref: Path) -> None:
    """Same weights, optimiser state and BN buffers (to RTOL), epoch records and result."""
    torch.testing.assert_close(_model(got), _model(ref), rtol=RTOL, atol=ATOL)
    a, b = _records(got), _records(ref)
    assert [r["epoch"] for r in a] == [0, 1, 2], "every epoch logged exactly once"
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], bool | str | None) or isinstance(y[k], bool | str | None):
                assert x[k] == y[k], k  # strings, flags and nulls exactly
            else:
                assert x[k] == pytest.approx(y[k], rel=RTOL, abs=ATOL), k
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (got, ref))
    assert ra["test_acc"] == rb["test_acc"] and ra["params"] == rb["params"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted single-process float64 training of 3 epochs (4 steps each)."""
    n = torch.get_num_threads()
    out = tmp_path_factory.mktemp("ref") / "run"
    _train(out, TINY)
    torch.set_num_threads(n)
    return out


def test_replicas_identical_with_drop_path_and_auxiliary_head(tmp_path):
    spawn(_steps_job, 2, tmp_path / "same.pt")
    assert torch.load(tmp_path / "same.pt", weights_only=True)["same"] == [True] * 4


def test_two_ranks_train_what_one_process_trains(tmp_path, reference):
    out = tmp_path / "run"
    spawn(_train_job, 2, out, TINY, None)
    _assert_same_training(out, reference)
    moved = _records(reference)
    assert moved[0]["train_loss"] != moved[-1]["train_loss"]


def test_resume_two_ranks_then_one_process(tmp_path, reference):
    out = tmp_path / "run"
    spawn(_train_job, 2, out, TINY, 1)
    assert (out / "checkpoint.pt").exists() and not (out / "result.json").exists()
    n = torch.get_num_threads()
    cfg = RunDir(out).read_config()
    train_image(cfg, RunDir.open_existing(out), resume=True, log=lambda _: None)
    torch.set_num_threads(n)
    _assert_same_training(out, reference)


def test_torchrun_train_resumes_one_process_run_on_two_ranks(tmp_path, reference):
    out = tmp_path / "run"
    _train(out, TINY, stop_after=1)
    r = torchrun("train", "--resume", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("training finished") == 1, "rank 0 alone prints"
    _assert_same_training(out, reference)


def test_single_process_tasks_refuse_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "lm"
    assert main(["train", "--task", "lm", "--out", str(out)]) == 2
    assert "trains in a single process" in capsys.readouterr().err
    assert not out.exists()
