"""Sample-and-rank selection (EN²AS) and Kendall's tau-b."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from diffnas.bench.ranking import kendall_tau
from diffnas.runs.config import load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import run_search
from diffnas.select import open_select_dir, run_select
from diffnas.select import sample_rank as sample_rank_module

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# Kendall tau-b
# ---------------------------------------------------------------------------------------------


def test_kendall_tau_on_hand_made_rankings():
    """1 for the same order, -1 for the reverse, tau-b with ties counted by hand, NaN when a
    sample is constant."""
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # Pairs: 4 concordant, none discordant, one tied in x only, one tied in y only:
    # (4 - 0) / sqrt((6 - 1) * (6 - 1)) = 0.8.
    assert kendall_tau([1, 2, 2, 3], [1, 3, 2, 3]) == pytest.approx(0.8)
    # One swap among 4: (5 - 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # Ties in both on the same pair count as tied, not concordant: (2 - 0) / sqrt(2 * 2).
    assert kendall_tau([1, 1, 2], [5, 5, 6]) == pytest.approx(1.0)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equal length"):
        kendall_tau([1, 2], [1, 2, 3])


# ---------------------------------------------------------------------------------------------
# The selection stage
# ---------------------------------------------------------------------------------------------

TINY = [
    "run.seed=5",
    "run.threads=1",
    "run.progress=false",
    'data.dataset="synthetic"',
    "data.limit=64",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    'space.name="nb201"',
    "space.C=4",
    "space.N=1",
    "search.epochs=1",
]
SELECT = [
    "select.sample_n=12",
    "select.sample_top_k=3",
    "select.sample_batches=2",
    "select.sample_batch_size=8",
]


def _search(out: Path, strategy: str) -> Path:
    cfg = load_config(None, [*TINY, f'search.strategy="{strategy}"', f"run.out={out}"])
    run_search(cfg, RunDir(out).create(cfg), log=lambda s: None)
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_sample_rank_keeps_the_best_of_the_top_k_and_resumes_exactly(tmp_path, monkeypatch):
    """Distinct candidates get quick scores; the top k of them are rescored on the whole val
    split; the best is selected. Stopped after two chunks and resumed: the same records and
    result."""
    search = _search(tmp_path / "s", "random_path")
    cfg, ref = open_select_dir(search, "sample_rank", SELECT, out=tmp_path / "ref")
    g = run_select(cfg, search, ref, log=lambda s: None)
    recs = _lines(ref.path / "candidates.jsonl")
    quick = [r for r in recs if r["stage"] == "quick"]
    full = [r for r in recs if r["stage"] == "full"]
    assert len(quick) == 12 and len({r["genotype"] for r in quick}) == 12
    top = sorted(quick, key=lambda r: (-r["acc"], r["index"]))[:3]
    assert [r["index"] for r in full] == [r["index"] for r in top]
    best = max(full, key=lambda r: r["acc"])
    result = json.loads((ref.path / "result.json").read_text())
    assert result["genotype"] == str(g) == best["genotype"]
    assert result["valid_acc"] == best["acc"]
    # An image supernet is scored as images are (random val batches, select.bn), not through
    # the objective path of the language models (their first segments, eval-mode BN).
    assert result["bn"] == cfg.select.bn == "train"
    assert json.loads((ref.path / "genotype.json").read_text())["arch"] == str(g)

    monkeypatch.setattr(sample_rank_module, "CHUNK", 5)
    cfg, run = open_select_dir(search, "sample_rank", SELECT, out=tmp_path / "b")
    assert run_select(cfg, search, run, log=lambda s: None, stop_after=2) is None
    assert len(_lines(run.path / "candidates.jsonl")) == 10
    cfg, run = open_select_dir(search, "sample_rank", out=tmp_path / "b", resume=True)
    assert str(run_select(cfg, search, run, resume=True, log=lambda s: None)) == str(g)
    assert _lines(run.path / "candidates.jsonl") == recs
    timeless = {k: v for k, v in result.items() if not k.endswith("time_s")}
    got = json.loads((run.path / "result.json").read_text())
    assert {k: v for k, v in got.items() if not k.endswith("time_s")} == timeless


def test_sample_rank_on_a_darts_supernet(tmp_path):
    """A DARTS supernet (with alphas and an architect) can be ranked the same way; its
    architect state is loaded as before."""
    search = _search(tmp_path / "s", "darts")
    cfg, run = open_select_dir(search, "sample_rank", SELECT)
    g = run_select(cfg, search, run, log=lambda s: None)
    assert json.loads((run.path / "result.json").read_text())["genotype"] == str(g)
