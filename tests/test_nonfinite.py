"""run.on_nonfinite: a diverged step stops the run (keeping its last checkpoint) or is undone."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import diffnas.search.darts
from diffnas.cli import main
from diffnas.runs.config import Config
from diffnas.runs.nonfinite import NonFiniteError, NonFiniteGuard
from diffnas.runs.rundir import RunDir


class Toy:
    """A trainer: one linear layer and SGD; `step(scale)` multiplies the gradient."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Linear(3, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.steps = 0

    def step(self, scale: float = 1.0) -> float:
        self.opt.zero_grad()
        loss = self.model(torch.ones(2, 3)).pow(2).mean() * scale
        loss.backward()
        self.opt.step()
        self.steps += 1
        return loss.item()

    def state_dict(self):
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "n": self.steps}

    def load_state_dict(self, s):
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["opt"])
        self.steps = s["n"]


def _guard(mode, toy, tmp_path):
    run = RunDir(tmp_path / "run").create(Config())
    return NonFiniteGuard(mode, toy, toy.model.parameters, run)


def test_skip_undoes_the_step_exactly(tmp_path):
    toy = Toy()
    toy.step()
    guard = _guard("skip", toy, tmp_path)
    before = {k: v.clone() for k, v in toy.model.state_dict().items()}
    momentum = [s["momentum_buffer"].clone() for s in toy.opt.state.values()]
    assert guard.run_step(lambda: toy.step(math.inf), lambda v: {"loss": v}, "step 2") is None
    assert all(torch.equal(before[k], v) for k, v in toy.model.state_dict().items())
    after = [s["momentum_buffer"] for s in toy.opt.state.values()]
    assert all(torch.equal(m, a) for m, a in zip(momentum, after, strict=True))
    assert toy.steps == 1 and guard.skipped == 1
    assert guard.run_step(toy.step, lambda v: {"loss": v}, "step 3") is not None
    assert guard.finish("epoch 1") == {"skipped_steps": 1}


def test_stop_names_the_step_and_a_finite_loss_with_nan_weights_is_caught(tmp_path):
    toy = Toy()
    guard = _guard("stop", toy, tmp_path)
    with pytest.raises(NonFiniteError, match="epoch 3, step 7.*loss = nan"):
        guard.run_step(lambda: toy.step(math.nan), lambda v: {"loss": v}, "epoch 3, step 7")

    toy = Toy()  # the stopped step was not undone: its weights are NaN

    def poison():
        loss = toy.step()
        with torch.no_grad():
            toy.model.weight[0, 0] = math.inf
        return loss

    with pytest.raises(NonFiniteError, match="a parameter"):
        guard.run_step(poison, lambda v: {"loss": v}, "step 8")
    # No checkpoint yet: the message does not offer a resume; with one, it does.
    with pytest.raises(NonFiniteError, match="Start the run again"):
        guard.run_step(lambda: toy.step(math.nan), lambda v: {"loss": v}, "x")
    guard.run.save_checkpoint({"epoch": 1})
    with pytest.raises(NonFiniteError, match="resume from its last good checkpoint with `diffnas"):
        guard.run_step(lambda: toy.step(math.nan), lambda v: {"loss": v}, "x")


def test_an_epoch_of_skipped_steps_is_an_error(tmp_path):
    toy = Toy()
    guard = _guard("skip", toy, tmp_path)
    for _ in range(3):
        guard.run_step(lambda: toy.step(math.inf), lambda v: {"loss": v}, "s")
    with pytest.raises(NonFiniteError, match="every one of its 3 steps"):
        guard.finish("epoch 1")


TINY = [
    "space.name=nb201",
    "space.C=4",
    "space.N=1",
    "data.dataset=synthetic",
    "data.limit=32",
    "data.batch_size=8",
    "search.epochs=3",
    "run.threads=1",
    "run.progress=false",
    "run.tensorboard=false",
]


def _search(out, *extra):
    return main(["search", "--out", str(out), *[a for s in [*TINY, *extra] for a in ("--set", s)]])


def test_a_diverged_search_keeps_its_last_checkpoint_and_resumes_exactly(
    tmp_path, monkeypatch, capsys
):
    assert _search(tmp_path / "ref") == 0
    real = diffnas.search.darts.DartsSearch.step
    calls = [0]

    def diverging(self, *args):
        m = real(self, *args)
        calls[0] += 1
        return {**m, "train_loss": math.nan} if calls[0] == 5 else m  # epoch 2 of 2 steps each

    monkeypatch.setattr(diffnas.search.darts.DartsSearch, "step", diverging)
    assert _search(tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert err.count("diffnas: error:") == 1 and "epoch 3, step 5" in err
    assert f"diffnas search --resume {tmp_path / 'run'}" in err
    run = RunDir(tmp_path / "run")
    assert run.has_checkpoint() and not (run.path / "genotype.json").exists()
    monkeypatch.setattr(diffnas.search.darts.DartsSearch, "step", real)
    assert main(["search", "--resume", str(run.path)]) == 0
    got, ref = run.load_checkpoint(), RunDir(tmp_path / "ref").load_checkpoint()
    torch.testing.assert_close(got["strategy"]["model"], ref["strategy"]["model"], rtol=0, atol=0)
    genotype = (run.path / "genotype.json").read_text()
    assert genotype == (tmp_path / "ref" / "genotype.json").read_text()


def test_a_search_diverging_before_its_first_checkpoint_leaves_nothing(tmp_path, capsys):
    assert _search(tmp_path / "run", "search.w_lr=1e30", "search.grad_clip=0") == 2
    err = capsys.readouterr().err
    assert err.count("diffnas: error:") == 1 and "diverged" in err
    assert not (tmp_path / "run").exists()
