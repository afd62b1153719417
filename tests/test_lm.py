"""Language modelling: the LM wrapper, the LM objective's hidden streams, the DARTS RNN search
through the core's DartsSearch (orders 1 and 2, exact resume), final training with the ASGD
switch (exact resume, result.json), and `diffnas train --task lm`."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY_LM, write_tiny_corpus

from diffnas import cli
from diffnas.arch import ArchParameters
from diffnas.runs.config import ConfigError, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import run_search
from diffnas.search.objectives import LMObjective
from diffnas.spaces.darts_rnn import DartsRNNSuperNet
from diffnas.spaces.genotypes import load_genotype
from diffnas.train import lm as lm_train
from diffnas.train.lm import LMTrainer, build_language_model, train_lm

TINY = TINY_LM


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """A tiny corpus in the PTB layout: random sentences over 12 words."""
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"), seed=0)


def test_language_model_cores_and_config_errors():
    """Any core behind the tied LM; wrong genotype/core combinations and untied sizes stop."""
    cfg = load_config(None, ["lm.emsize=6", "lm.nhid=6"]).lm
    for core in ("lstm", "gru"):
        cfg.core = core
        model = build_language_model(cfg, 20)
        assert model.decoder.weight is model.encoder.weight
        logits, hidden = model(torch.randint(0, 20, (3, 2)))
        assert logits.shape == (3, 2, 20)
        with pytest.raises(ConfigError, match="takes no genotype"):
            build_language_model(cfg, 20, load_genotype("DARTS_RNN_V2"))
    cfg.core = "darts_rnn"
    assert build_language_model(cfg, 20, load_genotype("DARTS_RNN_V2")).core.steps == 8
    with pytest.raises(ConfigError, match="needs a DARTS RNN genotype"):
        build_language_model(cfg, 20)
    with pytest.raises(ConfigError, match="needs a DARTS RNN genotype"):
        build_language_model(cfg, 20, load_genotype("DARTS_V2"))
    cfg.nhid = 7
    with pytest.raises(ConfigError, match="must be equal"):
        build_language_model(cfg, 20, load_genotype("DARTS_RNN_V2"))


def test_lm_objective_carries_hidden_per_stream():
    """`advance` moves a stream's hidden state to the segment's last state (detached); other
    passes read it without moving it; streams are independent; an epoch start resets them."""
    torch.manual_seed(0)
    net = DartsRNNSuperNet(9, 4, 4).eval()
    weights = ArchParameters(net.arch_shapes()).weights()
    obj = LMObjective(beta_tar=1e-3, bptt=5)
    seq = torch.randint(0, 9, (11, 2))
    seg1, seg2 = (seq[0:5], seq[1:6]), (seq[5:10], seq[6:11])
    obj.loss(net, weights, seg1, role="train", advance=True)
    _, h1 = net(seg1[0], weights)
    torch.testing.assert_close(obj.hidden["train"], h1)
    assert not obj.hidden["train"].requires_grad and "val" not in obj.hidden
    # A virtual pass (advance=False) uses the current hidden and leaves it alone.
    _, nll_virtual = obj.loss(net, weights, seg2, role="train")
    torch.testing.assert_close(obj.hidden["train"], h1)
    logits, _ = net(seg2[0], weights, h1)
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, 9), seg2[1].reshape(-1))
    torch.testing.assert_close(nll_virtual, want)
    # The continuation equals one pass over both segments.
    loss, nll = obj.loss(net, weights, seg2, role="train", advance=True, train_step=True)
    full, h_full = net(seq[0:10], weights)
    torch.testing.assert_close(obj.hidden["train"], h_full)
    assert loss.item() > nll.item()  # TAR on the weight step only
    obj.on_epoch_start(1)
    assert obj.hidden == {}


def _search(corpus_dir, out, settings, stop_after=None, resume=False):
    cfg = load_config(
        "configs/darts_rnn_ptb.toml",
        [*TINY, f"lm.data_dir={corpus_dir}", f"run.out={out}", *settings],
    )
    run = RunDir.open_existing(out) if resume else RunDir(out).create(cfg)
    if resume:
        cfg = run.read_config()
    return run_search(cfg, run, resume=resume, log=lambda s: None, stop_after=stop_after)


@pytest.mark.parametrize("order", [1, 2])
def test_lm_search_runs_and_resumes_exactly(corpus_dir, tmp_path, order):
    """`diffnas search` on the darts_rnn space: LM metrics per epoch, a valid RNN genotype, and
    a run stopped after one epoch and resumed equals an uninterrupted one bitwise."""
    settings = ["search.epochs=2", f"search.order={order}", "data.limit=120"]
    g_full = _search(corpus_dir, tmp_path / "full", settings)
    _search(corpus_dir, tmp_path / "cut", settings, stop_after=1)
    g_cut = _search(corpus_dir, tmp_path / "cut", settings, resume=True)
    assert g_full == g_cut and len(g_full.recurrent) == 8
    full = [r for r in RunDir(tmp_path / "full").read_metrics() if r["kind"] == "epoch"]
    cut = [r for r in RunDir(tmp_path / "cut").read_metrics() if r["kind"] == "epoch"]
    assert len(full) == len(cut) == 2
    for a, b in zip(full, cut, strict=True):
        for key in ("train_loss", "train_ppl", "val_loss", "valid_loss", "valid_ppl"):
            assert a[key] == b[key], key
    lines = [(tmp_path / d / "genotypes.jsonl").read_text().splitlines() for d in ("full", "cut")]
    weights = [[json.loads(x)["genotype"]["weights"] for x in ls] for ls in lines]
    assert weights[0] == weights[1]
    assert weights[0][0] != weights[0][1]  # the alphas moved


def test_asgd_switch_is_non_monotone(monkeypatch):
    """Switch when the loss is worse than the best of all but the last `nonmono` epochs; after
    it, validation scores ASGD's averaged weights and the best model is kept."""
    cfg = load_config(None, ["lm.emsize=4", "lm.nhid=4", "lm.core=gru", "lm.nonmono=2"])
    trainer = LMTrainer(build_language_model(cfg.lm, 9), cfg.train, cfg.lm)
    losses = iter([5.0, 4.0, 4.5, 4.2, 4.1, 3.0])
    monkeypatch.setattr(lm_train, "evaluate_lm", lambda model, batches: next(losses))
    switched = []
    for epoch in range(6):
        trainer.validate(_NoBatches(), epoch)
        switched.append(trainer.asgd)
    # history [5, 4, 4.5]: 4.2 > min([5]) is false; 4.1 > min([5, 4]) is true -> switch at 4.
    assert switched == [False, False, False, False, True, True]
    assert trainer.switch_epoch == 4 and isinstance(trainer.optimizer, torch.optim.ASGD)
    assert trainer.best_loss == 3.0


class _NoBatches:
    def epoch(self, seed=0):
        return iter(())


@pytest.mark.parametrize("core", ["darts_rnn", "lstm"])
def test_train_lm_resume_is_exact_and_writes_result(corpus_dir, tmp_path, core):
    """Final training: a run stopped after 2 of 3 epochs and resumed ends with the same
    result as an uninterrupted one; result.json has valid/test perplexity and parameters."""
    settings = [
        *TINY,
        f"lm.data_dir={corpus_dir}",
        f"lm.core={core}",
        "train.epochs=3",
        "lm.nonmono=1",
        "train.lr=5.0",
    ]
    if core == "darts_rnn":
        settings.append("train.genotype=DARTS_RNN_V2")
    results = []
    for name, stops in (("full", [None]), ("cut", [2, None])):
        out = tmp_path / name
        cfg = load_config("src/diffnas/configs/train_lm.toml", [*settings, f"run.out={out}"])
        run = RunDir(out).create(cfg)
        for i, stop in enumerate(stops):
            if i:
                run = RunDir.open_existing(out)
                cfg = run.read_config()
            result = train_lm(cfg, run, resume=i > 0, log=lambda s: None, stop_after=stop)
        results.append(result)
    a, b = results
    for key in ("valid_ppl", "test_ppl", "params", "asgd_epoch"):
        assert a[key] == b[key], key
    assert a["core"] == core and a["test_ppl"] > 1 and a["params"] > 0
    written = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert written["test_ppl"] == b["test_ppl"]
    epochs = RunDir(tmp_path / "full").read_metrics()
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    assert all(r["valid_ppl"] > 1 for r in epochs)


def test_cli_train_task_lm_picks_the_lm_recipe(corpus_dir, tmp_path, capsys):
    """`diffnas train --genotype DARTS_RNN_V1` trains an LM (the RNN genotype implies the lm
    task and its embedded recipe) and reports test perplexity."""
    out = tmp_path / "cli"
    sets = [f"--set={s}" for s in [*TINY, f"lm.data_dir={corpus_dir}", "train.epochs=1"]]
    assert cli.main(["train", "--genotype", "DARTS_RNN_V1", "--out", str(out), *sets]) == 0
    assert "test_ppl" in capsys.readouterr().out
    cfg = RunDir(out).read_config()
    assert cfg.train.task == "lm" and cfg.lm.bptt == 5 and cfg.train.weight_decay == 8e-7
    assert json.loads((out / "result.json").read_text())["core"] == "darts_rnn"


def test_lm_second_order_matches_exact_hypergradient(float64):
    """Order 2 on the LM supernet (the Architect unchanged, through the LM objective): the
    finite-difference hypergradient equals double-backward autograd of the unrolled step with
    the virtual gradient clipped as the real one (clip factor held constant); the train stream's
    hidden state is read, not advanced; the val stream's is advanced by the one val pass."""
    from torch.func import functional_call

    from diffnas.search.architect import Architect

    torch.manual_seed(0)
    net = DartsRNNSuperNet(7, 3, 3).train()
    arch = ArchParameters(net.arch_shapes(), init_std=1.0)
    xi, wd, clip = 0.5, 1e-3, 0.05
    w_opt = torch.optim.SGD(net.parameters(), lr=xi, weight_decay=wd)
    obj = LMObjective(bptt=4)
    a_opt = torch.optim.SGD(arch.parameters(), lr=1.0)
    architect = Architect(net, arch, a_opt, w_opt, obj, 2, 1e-7, virtual_clip=clip)
    g = torch.Generator().manual_seed(1)
    train = (torch.randint(0, 7, (4, 2), generator=g), torch.randint(0, 7, (4, 2), generator=g))
    val = (torch.randint(0, 7, (4, 2), generator=g), torch.randint(0, 7, (4, 2), generator=g))
    h_train = 0.3 * torch.randn(2, 3, generator=g)
    obj.hidden["train"] = h_train.clone()
    loss, grads = architect.second_order_grads(train, val, xi)

    named = {n: p for n, p in net.named_parameters()}
    alphas = list(arch.parameters())

    def lm_loss(params, batch, hidden):
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        logits, _ = functional_call(net, {**params, **buffers}, (batch[0], arch.weights(), hidden))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 7), batch[1].reshape(-1))

    g_train = torch.autograd.grad(
        lm_loss(named, train, h_train), list(named.values()), create_graph=True
    )
    norm = torch.sqrt(sum((t * t).sum() for t in g_train)).item()
    coef = min(1.0, clip / (norm + 1e-6))
    assert coef < 0.5, "the clip must bind for this test to mean something"
    unrolled = {
        n: w - xi * (coef * gt + wd * w) for (n, w), gt in zip(named.items(), g_train, strict=True)
    }
    exact = torch.autograd.grad(lm_loss(unrolled, val, None), alphas)
    err = (
        torch.cat([a.reshape(-1) - b.reshape(-1) for a, b in zip(grads, exact, strict=True)]).norm()
        / torch.cat([b.reshape(-1) for b in exact]).norm()
    ).item()
    assert err < 1e-4, f"relative error {err:.3e}"
    torch.testing.assert_close(obj.hidden["train"], h_train)  # read, not advanced
    assert obj.hidden["val"].shape == (2, 3)
