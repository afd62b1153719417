"""Multi-seed sweeps: seed parsing, resumption, and the summary arithmetic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from diffnas.cli import main
from diffnas.runs import sweep
from diffnas.runs.config import ConfigError
from diffnas.spaces.genotypes import genotype_to_json, load_genotype


def test_parse_seeds():
    assert sweep.parse_seeds("0-3") == [0, 1, 2, 3]
    assert sweep.parse_seeds("1,5, 7") == [1, 5, 7]
    assert sweep.parse_seeds("0-2,9") == [0, 1, 2, 9]
    for bad in ["", "a-b", "3,3", "-1", "2-x"]:
        with pytest.raises(ConfigError, match="--seeds"):
            sweep.parse_seeds(bad)


def _fake_run(d: Path, genotype: str, **final):
    d.mkdir(parents=True)
    recs = [{"kind": "epoch", "epoch": 0, "valid_acc": 1.0}, {"kind": "epoch", "epoch": 1, **final}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / "genotype.json").write_text(json.dumps(genotype_to_json(load_genotype(genotype))))


A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|"
B = "|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_summary_arithmetic_on_hand_made_runs(tmp_path):
    _fake_run(tmp_path / "seed-0", A, valid_acc=80.0, nb201_acc=90.0)
    _fake_run(tmp_path / "seed-1", A, valid_acc=84.0, nb201_acc=91.0)
    _fake_run(tmp_path / "seed-2", B, valid_acc=88.0, nb201_acc=95.0)
    (tmp_path / "seed-3").mkdir()  # unfinished: left out
    s = sweep.write_summary(tmp_path, [0, 1, 2, 3])
    assert s["runs"] == ["seed-0", "seed-1", "seed-2"]
    assert s["metrics"]["valid_acc"]["mean"] == pytest.approx(84.0)
    assert s["metrics"]["valid_acc"]["std"] == pytest.approx(4.0)
    assert s["metrics"]["nb201_acc"]["mean"] == pytest.approx(92.0)
    assert s["metrics"]["nb201_acc"]["std"] == pytest.approx(math.sqrt(7.0))
    assert s["distinct_genotypes"] == 2
    agree = s["edge_agreement"]
    assert agree["1<-0"] == {"choice": "nor_conv_3x3", "agree": 3, "of": 3}
    assert agree["2<-0"] == {"choice": "nor_conv_3x3", "agree": 2, "of": 3}
    assert agree["3<-1"] == {"choice": "nor_conv_1x1", "agree": 2, "of": 3}
    assert json.loads((tmp_path / "summary.json").read_text()) == s
    assert "2/3" in sweep.format_summary(s)


def test_darts_edges_not_kept_count_as_dash():
    v1, v2 = load_genotype("DARTS_V1"), load_genotype("DARTS_V2")
    moved = v2._replace(normal=[*v2.normal[:-1], ("dil_conv_3x3", 3)])  # node 5: input 3, not 2
    agree = sweep.edge_agreement([v2, v1, moved])
    assert agree["normal 2<-0"] == {"choice": "sep_conv_3x3", "agree": 3, "of": 3}
    # Node 5's edge from node 2: dil_conv_3x3 in V2, skip_connect in V1, not kept in `moved`.
    assert agree["normal 5<-2"]["agree"] == 1
    assert agree["normal 5<-3"] == {"choice": "-", "agree": 2, "of": 3}


def test_finished_seeds_are_skipped_and_interrupted_ones_resumed(tmp_path, monkeypatch):
    _fake_run(tmp_path / "seed-0", A, valid_acc=80.0)
    (tmp_path / "seed-1").mkdir()
    (tmp_path / "seed-1" / "checkpoint.pt").write_bytes(b"x")
    calls = []

    class Done:
        returncode = 0

    monkeypatch.setattr(sweep.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Done())
    failed = sweep.run_sweep(None, ["search.epochs=1"], [0, 1, 2], tmp_path, jobs=1, log=print)
    assert failed == []
    assert len(calls) == 2
    resumed, fresh = sorted(calls, key=lambda c: "--resume" not in c)
    assert resumed[-2:] == ["--resume", str(tmp_path / "seed-1")]
    assert "run.seed=2" in fresh and "search.epochs=1" in fresh


def test_sweep_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "sw"
    args = ["sweep", "--seeds", "0-1", "--jobs", "2", "--out", str(out)]
    for s in [
        "data.dataset=synthetic",
        "data.limit=64",
        "data.batch_size=16",
        "space.C=4",
        "space.N=1",
        "search.epochs=1",
    ]:
        args += ["--set", s]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "2 finished runs" in text and "edge agreement" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == ["seed-0", "seed-1"]
    assert main(args) == 0  # everything finished: nothing runs again
    assert "finished before, not run again" in capsys.readouterr().out


def test_ray_address_without_ray_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match="pip install ray"):
        sweep.run_sweep(None, [], [0], tmp_path, jobs=1, ray_address="auto")


def test_sweep_on_a_local_ray_cluster(tmp_path):
    """The seeds run as Ray tasks (a fresh local cluster stands in for an existing one)."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install ray)")
    sets = ["data.dataset=synthetic", "data.limit=64", "data.batch_size=16", "space.C=4"]
    sets += ["space.N=1", "search.epochs=1"]
    try:
        failed = sweep.run_sweep(None, sets, [0, 1], tmp_path, jobs=2, ray_address="local")
    finally:
        ray.shutdown()
    assert failed == []
    summary = sweep.write_summary(tmp_path, [0, 1])
    assert summary["runs"] == ["seed-0", "seed-1"]
