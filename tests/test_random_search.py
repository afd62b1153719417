"""The random-search baseline: uniform samples, standalone training, best by validation."""

from __future__ import annotations

import json

import pytest

import diffnas.data.images
from diffnas.cli import main
from diffnas.runs.config import load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.random_search import run_random_search, sample_genotypes

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "space.name=nb201",
    "data.dataset=synthetic",
    "data.limit=64",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "search.random_samples=3",
    "search.random_epochs=1",
    "train.C=4",
    "train.N=1",
    "train.auxiliary_weight=0",
    "train.drop_path=0",
    "run.threads=1",
    "run.progress=false",
    "run.tensorboard=false",
]


def test_samples_are_seeded_uniform_draws_of_the_space():
    cfg = load_config(None, TINY)
    a, b = sample_genotypes(cfg, 3, 10, 50), sample_genotypes(cfg, 3, 10, 50)
    assert [str(g) for g in a] == [str(g) for g in b]
    ops = [op for g in a for op in g.ops]
    assert {"none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"} <= set(ops)
    other = load_config(None, [*TINY, "run.seed=1"])
    assert [str(g) for g in sample_genotypes(other, 3, 10, 50)] != [str(g) for g in a]


def _records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(x).items() if k not in ("time", "train_time_s")} for x in lines
    ]


def test_best_by_validation_never_the_test_split_and_exact_resume(tmp_path, monkeypatch):
    real = diffnas.data.images.load_images

    def no_test(name, split, *args, **kw):
        assert split == "train", "random search read the test split"
        return real(name, split, *args, **kw)

    monkeypatch.setattr("diffnas.search.loop.load_images", no_test)
    cfg = load_config(None, [*TINY, f"run.out={tmp_path / 'a'}"])
    best = run_random_search(cfg, RunDir(tmp_path / "a").create(cfg), log=lambda s: None)
    recs = _records(tmp_path / "a")
    assert [r["sample"] for r in recs] == [0, 1, 2]
    top = max(recs, key=lambda r: r["valid_acc"])
    assert str(best) == top["genotype"]
    saved = json.loads((tmp_path / "a" / "genotype.json").read_text())
    assert saved == top["genotype_json"]
    # Stopped after one sample and resumed: the same samples, scores and result.
    cfg = load_config(None, [*TINY, f"run.out={tmp_path / 'b'}"])
    run_random_search(cfg, RunDir(tmp_path / "b").create(cfg), log=lambda s: None, stop_after=1)
    assert not (tmp_path / "b" / "genotype.json").exists()
    run = RunDir.open_existing(tmp_path / "b")
    again = run_random_search(run.read_config(), run, resume=True, log=lambda s: None)
    assert str(again) == str(best) and _records(tmp_path / "b") == recs


def test_command_line_and_run_kind(tmp_path, capsys):
    out = tmp_path / "rs"
    assert main(["random-search", "--out", str(out), *[a for s in TINY for a in ("--set", s)]]) == 0
    assert json.loads((out / "run.json").read_text())["kind"] == "random_search"
    assert "best by validation accuracy" in capsys.readouterr().out
    assert main(["search", "--resume", str(out)]) == 2
    assert "diffnas random-search --resume" in capsys.readouterr().err
    assert main(["random-search", "--resume", str(out)]) == 0  # finished: nothing left to run
    assert len(_records(out)) == 3
