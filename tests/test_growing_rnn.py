"""Growing the recurrent cells (DARTS RNN, two-input backbone) by network morphism: every growth
step preserves the function (LM and forecasting supernets, train-looking weights, to 1e-5),
the new node ramps in and ends as a fixed-size cell of the new size, optimiser state survives,
grow_and_prune prunes the older nodes, and a search resumed across a growth equals the
uninterrupted one."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TINY_LM, extend_weights, trained_looking, write_tiny_corpus

from diffnas import cli
from diffnas.arch import ArchParameters
from diffnas.runs.config import load_config
from diffnas.runs.rundir import RunDir
from diffnas.search import DartsSearch
from diffnas.search.loop import run_search
from diffnas.search.objectives import LMObjective
from diffnas.spaces.darts_rnn import (
    DartsRNNForecastSuperNet,
    DartsRNNSuperNet,
    edge_offset,
)
from diffnas.spaces.forecaster import ForecastShape
from diffnas.spaces.genotypes import load_genotype
from diffnas.spaces.pair_rnn import PairRNNForecastSuperNet, PairRNNSearchCell, PairRNNSuperNet

SHAPE = ForecastShape(n_series=3, lookback=7, horizon=2, single_step=False)


def lm_input(seed):
    return torch.randint(0, 11, (6, 3), generator=torch.Generator().manual_seed(seed))


def fc_input(seed):
    return torch.randn(
        3, SHAPE.lookback, SHAPE.n_series, generator=torch.Generator().manual_seed(seed)
    )


SUPERNETS = {
    "darts_rnn_lm": (lambda n: DartsRNNSuperNet(11, 6, 6, steps=n, dropouth=0.2), lm_input),
    "darts_rnn_forecast": (lambda n: DartsRNNForecastSuperNet(SHAPE, 6, steps=n), fc_input),
    "pair_lm_s0_mean": (
        lambda n: PairRNNSuperNet(11, 6, PairRNNSearchCell(6, 6, n, dropouth=0.2)),
        lm_input,
    ),
    "pair_lm_previous_last": (
        lambda n: PairRNNSuperNet(
            11, 6, PairRNNSearchCell(6, 6, n, second="previous", output="last")
        ),
        lm_input,
    ),
    "pair_forecast_hidden_last": (
        lambda n: PairRNNForecastSuperNet(
            SHAPE, PairRNNSearchCell(3, 6, n, second="hidden", output="last"), 6
        ),
        fc_input,
    ),
}


def run(model, x, weights):
    out = model(x, weights)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", list(SUPERNETS))
def test_growth_preserves_function(float64, name):
    """Eval mode, train-looking weights and BN statistics, two growth steps: the outputs right
    after each step equal those right before, whatever the new node's alpha rows are."""
    build, make_input = SUPERNETS[name]
    torch.manual_seed(0)
    model = build(2)
    trained_looking(model, seed=1)
    model.eval()
    x = make_input(2)
    weights = {"rnn": torch.softmax(torch.randn(model.arch_shapes()["rnn"]), -1)}
    for step in range(2):
        with torch.no_grad():
            before = run(model, x, weights)
            growth = model.grow(seed=step)
            assert growth.nodes == 3 + step and growth.added and not growth.replaced
            weights = extend_weights(weights, model.arch_shapes(), seed=10 + step)
            after = run(model, x, weights)
        torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
        assert model.presence()[-1] == 0.0
        model.set_presence(model.num_nodes() - 1, 1.0)
        assert not torch.allclose(run(model, x, weights), before)  # the new node is live


@pytest.mark.parametrize("name", ["darts_rnn_lm", "pair_lm_previous_last"])
def test_grown_cell_at_full_presence_is_the_fixed_size_cell(float64, name):
    """Once ramped in, a grown supernet of N+1 nodes computes what a fixed-size one with the
    same parameters does: growing ends in the ordinary search cell."""
    build, make_input = SUPERNETS[name]
    torch.manual_seed(0)
    grown = build(2)
    grown.grow(seed=0)
    grown.set_presence(2, 1.0)
    fixed = build(3)
    fixed.load_state_dict(grown.state_dict())
    grown.eval(), fixed.eval()
    weights = {"rnn": torch.softmax(torch.randn(grown.arch_shapes()["rnn"]), -1)}
    x = make_input(0)
    torch.testing.assert_close(run(grown, x, weights), run(fixed, x, weights), rtol=0, atol=1e-12)


def lm_search(search_cfg, seed, steps=2, pair=False, **kw):
    torch.manual_seed(seed)
    if pair:
        model = PairRNNSuperNet(11, 6, PairRNNSearchCell(6, 6, steps))
    else:
        model = DartsRNNSuperNet(11, 6, 6, steps=steps)
    arch = ArchParameters(model.arch_shapes(), init_std=1.0)
    base = dict(grower="morphism", grow_max_nodes=4, grow_every=1, grad_clip=0.25)
    cfg = search_cfg(**{**base, **kw})
    return DartsSearch(model, arch, cfg, steps_per_epoch=4, objective=LMObjective(bptt=5))


def segment(seed):
    t = lm_input(seed)
    return t[:-1], t[1:]


def test_ramp_and_optimizer_state_across_growth(search_cfg):
    """The new node's presence is 0 at growth and rises by 1/(R * steps per epoch) per step to
    1; SGD momentum and Adam moments of the old parameters survive growth unchanged, and the
    new node's W joins the SGD group."""
    s = lm_search(search_cfg, 0, grow_ramp_epochs=2)
    s.on_epoch_start(0)
    for k in range(4):
        s.step(segment(k), segment(k + 10))
    old_w = {id(p): copy.deepcopy(s.w_optimizer.state[p]) for p in s.model.parameters()}
    old_a = copy.deepcopy(s.a_optimizer.state[s.arch.alphas_rnn])
    assert s.on_epoch_end(0, {"valid_loss": 3.0})["grew"]
    assert s.model.num_nodes() == 3 and s.model.presence() == [1.0, 1.0, 0.0]
    for p in s.model.parameters():
        if id(p) in old_w:
            st = s.w_optimizer.state[p]
            assert torch.equal(st["momentum_buffer"], old_w[id(p)]["momentum_buffer"])
    grouped = {id(p) for g in s.w_optimizer.param_groups for p in g["params"]}
    assert id(s.model.core.Ws[2]) in grouped
    st = s.a_optimizer.state[s.arch.alphas_rnn]
    rows = old_a["exp_avg"].shape[0]
    assert torch.equal(st["exp_avg"][:rows], old_a["exp_avg"]) and not st["exp_avg"][rows:].any()
    assert torch.equal(st["step"], old_a["step"])
    seen = []
    for epoch in (1, 2, 3):
        s.on_epoch_start(epoch)
        for k in range(4):
            s.step(segment(k), segment(k + 10))
            seen.append(s.model.presence()[2])
    assert seen[:8] == [i / 8 for i in range(1, 9)] and seen[8:] == [1.0] * 4
    assert s.model.core.Ws[2].grad is not None and s.model.core.Ws[2].grad.abs().sum() > 0


def test_grow_and_prune_keeps_one_edge_per_older_node(search_cfg):
    """DARTS RNN, grow_and_prune: after the growth, every older node keeps only the edge the
    derivation picks (with grow_prune_ops, its op too); the new node keeps all its edges."""
    for ops_too in (False, True):
        s = lm_search(search_cfg, 0, grow_mode="grow_and_prune", grow_prune_ops=ops_too)
        s.on_epoch_start(0)
        s.step(segment(0), segment(1))
        genotype = s.genotype()
        s.on_epoch_end(0, {"valid_loss": 3.0})
        mask = s.arch.masks()["rnn"]
        for node in (1, 2):
            rows = mask[edge_offset(node) : edge_offset(node) + node]
            live = [j for j in range(node) if rows[j].any()]
            assert live == [genotype.recurrent[node - 1][1]]
            assert int(rows[live[0]].sum()) == (1 if ops_too else mask.shape[1])
        assert mask[edge_offset(3) :].all()
        assert s.genotype().recurrent[:2] == genotype.recurrent


def test_grow_and_prune_of_the_two_input_backbone_discretises_older_nodes(search_cfg):
    """Its nodes have fixed inputs, so pruning keeps each older node's derived op alone."""
    s = lm_search(search_cfg, 0, pair=True, grow_mode="grow_and_prune")
    s.on_epoch_start(0)
    s.step(segment(0), segment(1))
    genotype = s.genotype()
    s.on_epoch_end(0, {"valid_loss": 3.0})
    mask = s.arch.masks()["rnn"]
    ops = s.model.op_names
    for node in (0, 1):
        assert mask[node].tolist() == [float(o == genotype.ops[node]) for o in ops]
    assert mask[2].all() and s.genotype().ops[:2] == genotype.ops


GROWING_LM = [
    *TINY_LM,
    "data.limit=80",
    "run.seed=5",
    "space.steps=1",
    "search.epochs=3",
    'search.grower="morphism"',
    "search.grow_max_nodes=3",
    "search.grow_every=1",
]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"), seed=3)


@pytest.mark.parametrize("config", ["configs/darts_rnn_ptb.toml", "configs/pair_rnn_ptb.toml"])
def test_lm_search_resume_across_growth_equals_uninterrupted(corpus_dir, tmp_path, config):
    """A growing LM search (1 -> 3 nodes) stopped after the first growth and resumed ends like
    the uninterrupted one: genotype, alphas, weights and every epoch record."""

    def search(out, stop_after=None, resume=False):
        cfg = load_config(config, [*GROWING_LM, f"lm.data_dir={corpus_dir}", f"run.out={out}"])
        run = RunDir.open_existing(out) if resume else RunDir(out).create(cfg)
        return run_search(cfg, run, resume=resume, log=lambda s: None, stop_after=stop_after)

    g_ref = search(tmp_path / "a")
    search(tmp_path / "b", stop_after=1)
    g = search(tmp_path / "b", resume=True)
    assert g == g_ref
    a, b = (RunDir(tmp_path / k).load_checkpoint()["strategy"] for k in "ab")
    for part in ("arch", "model"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])

    def epochs(path):
        recs = [r for r in RunDir(path).read_metrics() if r["kind"] == "epoch"]
        return [{k: v for k, v in r.items() if k not in ("time", "epoch_time_s")} for r in recs]

    assert epochs(tmp_path / "a") == epochs(tmp_path / "b")
    assert [r["nodes"] for r in epochs(tmp_path / "a")] == [1, 2, 3]
    # `diffnas select` rebuilds the grown supernet at its saved size.
    assert cli.main(["select", str(tmp_path / "a"), "--method", "magnitude"]) == 0
    assert load_genotype(str(tmp_path / "a" / "select-magnitude")) == g_ref


@pytest.mark.parametrize("name", ["darts_rnn_lm", "pair_lm_s0_mean"])
def test_new_parameters_follow_the_model_dtype_and_are_the_modules_own(name):
    """A model moved to float64 (default dtype float32) grows float64 parameters, and the
    parameters Growth reports (for the optimiser) are the very ones the model holds."""
    model = SUPERNETS[name][0](2).double()
    growth = model.grow(seed=0)
    held = {id(p) for p in model.parameters()}
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert growth.added and all(id(p) in held for p in growth.added)
