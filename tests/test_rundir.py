"""RunDir: atomic checkpoints, fallback, log truncation on resume, refusing to overwrite; RNG."""

from __future__ import annotations

import json
import random
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from diffnas.runs.config import Config, load_config
from diffnas.runs.rng import capture_rng, restore_rng, seed_everything
from diffnas.runs.rundir import (
    CHECKPOINT_FILE,
    PREV_CHECKPOINT_FILE,
    CheckpointError,
    RunDir,
    RunDirError,
    resolve_out,
)


class NotWeightsOnly:
    """A plain object: pickles fine, but weights_only loading rejects it."""


def draws() -> tuple:
    return (
        [random.random() for _ in range(3)],
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        float(np.random.randn()),
        torch.rand(3).tolist(),
        torch.randn(2).tolist(),
    )


def new_run(tmp_path: Path) -> RunDir:
    return RunDir(tmp_path / "run").create(load_config(overrides=["search.epochs=3"]))


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rng_round_trip_through_weights_only_file(tmp_path):
    seed_everything(0)
    random.gauss(0, 1)  # leave a cached gaussian in both generators' states
    np.random.randn()
    state = capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    first = draws()
    draws()
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == first


def test_seed_everything_repeats():
    seed_everything(123)
    a = draws()
    seed_everything(123)
    assert draws() == a
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_checkpoint_round_trip(tmp_path):
    run = new_run(tmp_path)
    assert run.read_config() == load_config(overrides=["search.epochs=3"])
    seed_everything(1)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 2,
        "misc": [1, 2.5, "x", None, True, (3, 4)],
        "rng": capture_rng(),
    }
    path = run.save_checkpoint(state)
    assert path == run.path / CHECKPOINT_FILE
    files = sorted(p.name for p in run.path.iterdir())
    assert files == ["checkpoint.pt", "config.toml"]
    after = draws()

    resumed = RunDir.open_existing(run.path)
    loaded = resumed.load_checkpoint()
    assert set(loaded) == set(state)
    for k, v in state["model"].items():
        assert torch.equal(loaded["model"][k], v)
    assert loaded["epoch"] == 2 and loaded["misc"] == state["misc"]
    opt2 = torch.optim.SGD(torch.nn.Linear(4, 3).parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(loaded["optimizer"])
    restore_rng(loaded["rng"])
    assert draws() == after


def test_checkpoint_keeps_previous_and_rejects_unsafe_state(tmp_path):
    run = new_run(tmp_path)
    run.save_checkpoint({"epoch": 1})
    run.save_checkpoint({"epoch": 2})
    prev = torch.load(run.path / PREV_CHECKPOINT_FILE, weights_only=True)
    assert prev["epoch"] == 1
    with pytest.raises(TypeError, match="weights_only"):
        run.save_checkpoint({"epoch": 3, "obj": NotWeightsOnly()})
    assert run.load_checkpoint()["epoch"] == 2
    assert not any(p.name.endswith(".tmp") for p in run.path.iterdir())


def test_truncated_checkpoint_raises(tmp_path):
    run = new_run(tmp_path)
    run.save_checkpoint({"w": torch.randn(100, 100), "epoch": 1})
    ckpt = run.path / CHECKPOINT_FILE
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError) as info:
        RunDir(run.path).load_checkpoint()
    assert str(ckpt) in str(info.value)


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    run = new_run(tmp_path)
    run.save_checkpoint({"epoch": 1})
    run.save_checkpoint({"epoch": 2})
    (run.path / CHECKPOINT_FILE).write_bytes(b"garbage, not a zip archive")
    resumed = RunDir.open_existing(run.path)
    with pytest.warns(UserWarning, match=r"checkpoint\.pt"):
        assert resumed.load_checkpoint()["epoch"] == 1
    # The next save must replace the broken file and keep the good previous one.
    resumed.save_checkpoint({"epoch": 2})
    assert torch.load(run.path / PREV_CHECKPOINT_FILE, weights_only=True)["epoch"] == 1
    assert resumed.load_checkpoint()["epoch"] == 2


def test_missing_checkpoint(tmp_path):
    run = new_run(tmp_path)
    with pytest.raises(CheckpointError, match=str(run.path)):
        RunDir.open_existing(run.path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run.load_checkpoint()
    with pytest.raises(RunDirError, match="no such run directory"):
        RunDir.open_existing(tmp_path / "nowhere")


def test_load_checkpoint_truncates_logs(tmp_path):
    run = new_run(tmp_path)
    for step in range(3):
        run.log_metrics({"step": step, "loss": torch.tensor(1.5), "acc": np.float32(0.25)})
    run.log_genotype(0, {"normal": [["skip_connect", 0]]})
    run.save_checkpoint({"epoch": 1})
    metrics_before = (run.path / "metrics.jsonl").read_text()
    genotypes_before = (run.path / "genotypes.jsonl").read_text()

    # The killed run kept going after the checkpoint, then died mid-line.
    run.log_metrics({"step": 3, "loss": 1.0})
    run.log_genotype(1, {"normal": [["sep_conv_3x3", 1]]})
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')

    RunDir.open_existing(run.path).load_checkpoint()
    assert (run.path / "metrics.jsonl").read_text() == metrics_before
    assert (run.path / "genotypes.jsonl").read_text() == genotypes_before
    records = read_lines(run.path / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    assert records[0]["loss"] == 1.5 and records[0]["acc"] == 0.25 and "time" in records[0]
    assert read_lines(run.path / "genotypes.jsonl")[0]["epoch"] == 0


def test_refuses_to_overwrite_a_run(tmp_path):
    run = new_run(tmp_path)
    run.save_checkpoint({"epoch": 1})
    with pytest.raises(RunDirError) as info:
        RunDir(run.path).create(Config())
    assert "--resume" in str(info.value) and str(run.path) in str(info.value)


def test_create_over_run_without_checkpoint_starts_clean(tmp_path):
    run = new_run(tmp_path)
    run.log_metrics({"step": 0})
    with pytest.warns(UserWarning, match="metrics.jsonl"):
        RunDir(run.path).create(Config())
    assert not (run.path / "metrics.jsonl").exists()
    assert RunDir(run.path).read_config() == Config()


def test_json_files(tmp_path):
    run = new_run(tmp_path)
    genotype = {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]], "normal_concat": [2]}
    assert json.loads(run.write_genotype(genotype).read_text()) == genotype
    record = run.write_json("selection/pt.json", {"scores": [0.5, 0.25]})
    assert json.loads(record.read_text()) == {"scores": [0.5, 0.25]}
    assert not any(p.name.endswith(".tmp") for p in run.path.rglob("*"))


def test_resolve_out():
    cfg = Config()
    stamp = datetime(2024, 5, 6, 7, 8, 9)
    assert resolve_out(cfg, stamp) == Path("runs/nb201-fashion_mnist-20240506-070809")
    cfg.run.out = "mine"
    assert resolve_out(cfg, stamp) == Path("mine")


# ----------------------------------------------------------------------------- run kinds


def test_a_run_directory_says_its_kind_and_refuses_other_commands(tmp_path):
    search = RunDir(tmp_path / "s").create(Config(), "search")
    train = RunDir(tmp_path / "t").create(Config(), "train")
    assert not (RunDir(tmp_path / "lib").create(Config()).path / "run.json").exists()
    select = RunDir(tmp_path / "s" / "select-perturbation").create(
        Config(), "select", method="perturbation", search=str(search.path)
    )
    assert json.loads((train.path / "run.json").read_text()) == {"kind": "train"}
    assert search.describe() == "a search" and train.describe() == "a final training"
    assert select.describe() == "a perturbation selection"
    search.require_kind("search", "resume")
    with pytest.raises(RunDirError) as info:
        select.require_kind("search", "resume")
    msg = str(info.value)
    assert "is a perturbation selection, not a search" in msg
    assert f"diffnas select {search.path} --method perturbation --resume --out {select.path}" in msg
    with pytest.raises(RunDirError, match=f"resume it with `diffnas train --resume {train.path}`"):
        train.require_kind("search", "resume")
    with pytest.raises(RunDirError, match="is a search, not a final training"):
        search.require_kind("train", "resume")
    # open_existing checks the kind before anything else.
    select.save_checkpoint({"epoch": 1})
    with pytest.raises(RunDirError, match="perturbation selection"):
        RunDir.open_existing(select.path, "search")


def test_directories_from_before_run_json_get_their_kind_from_their_files(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    assert RunDir(old).info() == {}  # nothing to tell: any command may try it
    (old / "genotypes.jsonl").write_text("")
    assert RunDir(old).info()["kind"] == "search"
    (old / "result.json").write_text("{}")
    assert RunDir(old).info()["kind"] == "train"
    sel = old / "select-perturbation"
    sel.mkdir()
    assert RunDir(sel).info() == {"kind": "select", "method": "perturbation", "search": str(old)}
    (old / "run.json").write_text("{not json")
    with pytest.raises(RunDirError, match="run.json is corrupt"):
        RunDir(old).info()


def test_a_run_that_never_checkpointed_is_removed_again(tmp_path):
    made = RunDir(tmp_path / "a" / "b").create(Config())
    made.log_metrics({"step": 0})
    assert made.discard_unstarted() and not (tmp_path / "a" / "b").exists()
    # A directory the user made keeps everything but the run's own files.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    run = RunDir(mine).create(Config())
    assert run.discard_unstarted()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # With a checkpoint nothing is touched; nor is a directory this object did not create.
    kept = RunDir(tmp_path / "kept").create(Config())
    kept.save_checkpoint({"epoch": 1})
    assert not kept.discard_unstarted() and (kept.path / "config.toml").is_file()
    assert not RunDir(tmp_path / "kept").discard_unstarted()


def test_create_refuses_a_path_under_a_file(tmp_path):
    (tmp_path / "plain").write_text("")
    with pytest.raises(RunDirError, match="plain is a file"):
        RunDir(tmp_path / "plain" / "run").create(Config())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]
