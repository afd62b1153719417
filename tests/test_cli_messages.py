"""What the command tells a user: interrupt hints, default output paths, progress output."""

from __future__ import annotations

import io
import json
import shlex

import pytest

import diffnas.search.loop
from diffnas.cli import main
from diffnas.runs.progress import Progress
from diffnas.spaces.genotypes import genotype_to_json
from diffnas.spaces.published import GENOTYPES

TINY = [
    "data.dataset=synthetic",
    "data.limit=16",
    "data.batch_size=8",
    "space.C=4",
    "space.N=1",
    "run.progress=false",
    "run.tensorboard=false",
    "run.threads=1",
]


def _sets(pairs):
    return [a for s in pairs for a in ("--set", s)]


def test_ctrl_c_names_the_run_to_resume(tmp_path, monkeypatch, capsys):
    def interrupted(cfg, run, **kwargs):
        run.save_checkpoint({"epoch": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(diffnas.search.loop, "run_search", interrupted)
    run = tmp_path / "my run"
    assert main(["search", "--out", str(run), *_sets(TINY)]) == 130
    err = capsys.readouterr().err
    assert f"resume with `diffnas search --resume {shlex.quote(str(run))}`" in err
    assert "RUN_DIR" not in err


def test_ctrl_c_before_the_first_checkpoint_removes_the_run(tmp_path, monkeypatch, capsys):
    def interrupted(cfg, run, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(diffnas.search.loop, "run_search", interrupted)
    assert main(["search", "--out", str(tmp_path / "run"), *_sets(TINY)]) == 130
    err = capsys.readouterr().err
    assert "removed" in err and "resume with" not in err and not (tmp_path / "run").exists()


def test_export_of_a_run_directory_writes_into_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "search"
    run.mkdir()
    nb201 = GENOTYPES.get("NB201_BEST").genotype
    (run / "genotype.json").write_text(json.dumps(genotype_to_json(nb201)))
    assert main(["export", str(run), "--format", "state_dict", "--set", "train.C=4"]) == 0
    assert (run / "export" / "network.pt").is_file()
    assert main(["export", "nb201_best", "--format", "state_dict", "--set", "train.C=4"]) == 0
    assert (tmp_path / "exports" / "NB201_BEST.pt").is_file()
    assert "default: onnx" in _help(capsys, ["export", "--help"])


def _help(capsys, argv) -> str:
    with pytest.raises(SystemExit):
        main(argv)
    return capsys.readouterr().out


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream, drawn", [(io.StringIO(), False), (_Terminal(), True)])
def test_progress_bar_draws_on_a_terminal_only(stream, drawn):
    bar = Progress(range(5), total=5, desc="epoch 1/1", stream=stream, min_interval=0)
    for _ in bar:
        bar.update(loss=1.0)
    assert ("epoch 1/1" in stream.getvalue()) == drawn
    assert (stream.getvalue() == "") == (not drawn)
