"""Growing cells by network morphism: function preservation, optimiser state, triggers, modes,
clear config errors, and exact resume across a growth step."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from helpers import extend_weights, trained_looking

from diffnas.arch import ArchParameters
from diffnas.runs.config import ConfigError, SearchConfig, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search import DartsSearch
from diffnas.search.growing import PlateauTrigger, active_edges
from diffnas.search.loop import run_search
from diffnas.spaces import build_supernet
from diffnas.spaces.darts_cnn import DartsSuperNet, edge_list

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("mode", "node_bn"), [("eval", False), ("eval", True), ("train", False)])
def test_cnn_growth_preserves_function(float64, make_batch, mode, node_bn):
    """Every growth step 1 -> 2 -> 3 -> 4 nodes leaves the output unchanged, with trained-looking
    weights and random alphas. Three cells (normal, reduce, reduce) cover every reader of a
    cell's output: a 1x1 preprocess1, a FactorizedReduce preprocess0, the classifier."""
    torch.manual_seed(0)
    model = DartsSuperNet(C=4, layers=3, num_classes=3, steps=1, multiplier=1, node_bn=node_bn)
    trained_looking(model, 1)
    model.train(mode == "train")
    x, _ = make_batch(n=3, h=7, w=7)  # odd size: the FactorizedReduce padding path too
    g = torch.Generator().manual_seed(2)
    weights = {
        k: torch.softmax(2 * torch.randn(s, generator=g), -1)
        for k, s in model.arch_shapes().items()
    }
    with torch.no_grad():
        before = model(x, weights)
        for step in range(3):
            growth = model.grow(seed=step)
            assert growth.nodes == model.num_nodes() == step + 2
            assert model.arch_shapes()["normal"][0] == len(edge_list(step + 2))
            weights = extend_weights(weights, model.arch_shapes(), 10 + step)
            after = model(x, weights)
            assert torch.allclose(after, before, atol=1e-5, rtol=0), (after - before).abs().max()
            # The genotype lists every node, all of them concatenated.
            gene = model.genotype(weights)
            assert len(gene.normal) == 2 * (step + 2)
            assert gene.normal_concat == list(range(2, step + 4))


def test_grown_node_learns(make_batch):
    """The zero weights that hide the new node get a non-zero gradient: it is not dead."""
    torch.manual_seed(0)
    model = DartsSuperNet(C=4, layers=3, num_classes=3, steps=1, multiplier=1)
    growth = model.grow(seed=0)
    arch = ArchParameters(model.arch_shapes(), init_std=1.0)
    x, y = make_batch()
    torch.nn.functional.cross_entropy(model(x, arch.weights()), y).backward()
    for old, new in growth.replaced:
        hidden = new.grad[:, old.shape[1] :]
        assert hidden.abs().sum() > 0
        assert torch.equal(new.detach()[:, old.shape[1] :], torch.zeros_like(hidden))


def grow_cfg(search_cfg, **kw) -> SearchConfig:
    """A growing [search] section: first order, no clipping (keeps steps comparable)."""
    base = dict(grower="morphism", grow_max_nodes=3, grow_every=1, grad_clip=0.0)
    return search_cfg(**{**base, **kw})


# Fewer candidates keep the search-level tests fast; the morphism test above uses all 8.
FEW_OPS = ("none", "skip_connect", "sep_conv_3x3", "avg_pool_3x3")


def make_search(cfg, seed, steps=1, layers=3):
    """A tiny DartsSearch on a DARTS supernet of `steps` nodes (FEW_OPS on every edge)."""
    torch.manual_seed(seed)
    ops = {k: [FEW_OPS] * len(edge_list(steps)) for k in ("normal", "reduce")}
    model = DartsSuperNet(
        C=4, layers=layers, num_classes=3, steps=steps, multiplier=steps, edge_ops=ops
    )
    arch = ArchParameters(model.arch_shapes(), init_std=1.0)
    return DartsSearch(model, arch, cfg)


def test_optimizer_state_survives_growth(float64, search_cfg, make_batch):
    """Grow after two steps: SGD momentum and Adam moments of old parameters carry over
    (zero-padded), Adam's step is kept, new modules join the SGD group; the next step moves
    every old weight and alpha exactly as in the search that did not grow."""
    cfg = grow_cfg(search_cfg)
    a = make_search(cfg, 0)
    for s in range(2):
        a.step(make_batch(seed=2 * s), make_batch(seed=2 * s + 1))
    b = copy.deepcopy(a)  # the same search, never grown
    names = {id(p): n for n, p in a.model.named_parameters()}
    old_w = {names[id(p)]: copy.deepcopy(a.w_optimizer.state[p]) for p in a.model.parameters()}
    old_a = {n: copy.deepcopy(a.a_optimizer.state[p]) for n, p in a.arch.named_parameters()}
    n_params = sum(len(g["params"]) for g in a.w_optimizer.param_groups)

    a.grower.grow()

    params = dict(a.model.named_parameters())
    for name, st in old_w.items():
        new_st = a.w_optimizer.state[params[name]]
        buf, new_buf = st["momentum_buffer"], new_st["momentum_buffer"]
        lead = tuple(slice(0, n) for n in buf.shape)
        assert torch.equal(new_buf[lead], buf), name
        padding = torch.ones_like(new_buf, dtype=torch.bool)
        padding[lead] = False
        assert not new_buf[padding].any(), name
    grouped = [p for g in a.w_optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in grouped} == {id(p) for p in a.model.parameters()}
    assert len(grouped) > n_params
    for name, alpha in a.arch.named_parameters():
        st, new_st = old_a[name], a.a_optimizer.state[alpha]
        rows = st["exp_avg"].shape[0]
        assert torch.equal(new_st["step"], st["step"])
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(new_st[k][:rows], st[k]) and not new_st[k][rows:].any()
    assert a.arch.masks()["normal"].shape == a.arch.alphas()["normal"].shape

    for s in (a, b):
        s.step(make_batch(seed=8), make_batch(seed=9))
    pb = dict(b.model.named_parameters())
    for name, p in a.model.named_parameters():
        if name in pb:
            q = pb[name]
            lead = tuple(slice(0, n) for n in q.shape)
            assert torch.allclose(p.detach()[lead], q.detach(), atol=1e-10), name
    for k, alpha in b.arch.alphas().items():
        got = a.arch.alphas()[k][: alpha.shape[0]]
        assert torch.allclose(got, alpha, atol=1e-10), k


def test_every_trigger_and_max_nodes(search_cfg, make_batch):
    """`every` 2: grows after epochs 1 and 3, then stops at grow_max_nodes; records say so."""
    cfg = grow_cfg(search_cfg, grow_every=2, grow_max_nodes=3)
    s = make_search(cfg, 0)
    grew = [s.on_epoch_end(epoch, {"valid_loss": 1.0})["grew"] for epoch in range(6)]
    assert grew == [False, True, False, True, False, False]
    assert s.model.num_nodes() == 3 and s.grower.grown_at == [1, 3]


def test_plateau_trigger():
    """Grows when the smoothed loss stalls for P epochs; not while it improves; windows restart
    after a growth."""
    cfg = SearchConfig(grow_patience=2, grow_threshold=0.05, grow_smoothing=0.0)
    t = PlateauTrigger(cfg)
    losses = [2.0, 1.5, 1.0, 0.99, 0.98]  # improving a lot, then by ~2% over 2 epochs
    assert [t.should_grow(e, v) for e, v in enumerate(losses)] == [False] * 4 + [True]
    t.grew()
    assert not t.should_grow(5, 0.98) and t.should_grow(6, 0.98)
    smooth = PlateauTrigger(SearchConfig(grow_patience=1, grow_threshold=0.0, grow_smoothing=0.5))
    smooth.should_grow(0, 1.0)
    assert not smooth.should_grow(1, 0.0) and smooth.smoothed == 0.5
    assert not PlateauTrigger(cfg).should_grow(0, float("nan"))


def test_grow_and_prune_keeps_two_edges_per_older_node(search_cfg, make_batch):
    """After a growth in grow_and_prune, each older node keeps the 2 edges the DARTS rule picks
    (with grow_prune_ops, one op each); the new node keeps all its edges and ops."""
    for ops_too in (False, True):
        cfg = grow_cfg(search_cfg, grow_mode="grow_and_prune", grow_prune_ops=ops_too)
        s = make_search(cfg, 0, steps=2, layers=3)
        s.step(make_batch(seed=0), make_batch(seed=1))
        edges_before = active_edges(s.arch)
        genotype = s.genotype()
        s.on_epoch_end(0, {"valid_loss": 1.0})
        for kind, mask in s.arch.masks().items():
            per_node = [[e for e, (_, to) in enumerate(edge_list(3)) if to == n] for n in (2, 3, 4)]
            for node, rows in enumerate(per_node[:2]):
                live = [e for e in rows if mask[e].any()]
                assert len(live) == 2, (kind, node, live)
                if ops_too:
                    assert all(int(mask[e].sum()) == 1 for e in live)
            assert mask[per_node[2]].all()
        # Pruning the older nodes keeps what the derivation had chosen for them.
        assert s.genotype().normal[:4] == genotype.normal
        assert active_edges(s.arch) == edges_before - 2 + 2 * 4  # -1 edge/type, +4 new/type


def test_config_errors_name_the_keys(search_cfg, space_cfg):
    """Start >= max, a space without growth, per-edge op sets, a partial concat: clear errors."""
    with pytest.raises(ConfigError, match=r"space\.steps.*grow_max_nodes"):
        make_search(grow_cfg(search_cfg, grow_max_nodes=2), 0, steps=2)
    nb201 = build_supernet(space_cfg("nb201"), 3, 3)
    arch = ArchParameters(nb201.arch_shapes())
    with pytest.raises(
        ConfigError, match=r"search\.grower.*space\.name.*NB201SuperNet.*no growth rule"
    ):
        DartsSearch(nb201, arch, grow_cfg(search_cfg))
    s1 = build_supernet(space_cfg("s1"), 3, 3)
    with pytest.raises(ConfigError, match="different candidate-op sets"):
        DartsSearch(s1, ArchParameters(s1.arch_shapes()), grow_cfg(search_cfg, grow_max_nodes=5))
    partial = DartsSuperNet(C=4, layers=3, num_classes=3, steps=2, multiplier=1)
    with pytest.raises(ConfigError, match=r"space\.multiplier = space\.steps"):
        DartsSearch(partial, ArchParameters(partial.arch_shapes()), grow_cfg(search_cfg))
    with pytest.raises(ConfigError, match="grower"):
        load_config(None, ["search.grower=bogus"])


def test_darts_search_resume_across_growth_is_exact(search_cfg, make_batch):
    """Save after a growth step, load into a fresh (small) search: it is rebuilt at the saved
    size and continues bitwise like the uninterrupted one."""
    batches = [make_batch(seed=s) for s in range(8)]
    cfg = grow_cfg(search_cfg, grow_mode="grow_and_prune")
    a = make_search(cfg, 0, steps=2)
    a.step(batches[0], batches[1])
    a.on_epoch_end(0, {"valid_loss": 1.0})  # grows to 3 nodes and prunes
    a.step(batches[2], batches[3])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make_search(cfg, 1, steps=2)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.model.num_nodes() == 3
    for s in (a, b):
        s.step(batches[4], batches[5])
        s.step(batches[6], batches[7])
    for p, q in zip(
        [*a.arch.parameters(), *a.model.parameters()],
        [*b.arch.parameters(), *b.model.parameters()],
        strict=True,
    ):
        assert torch.equal(p, q)
    assert all(torch.equal(a.arch.masks()[k], b.arch.masks()[k]) for k in a.arch.masks())


TINY = [
    "run.seed=3",
    "run.threads=1",
    "run.progress=false",
    'data.dataset="synthetic"',
    "data.limit=16",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    'space.name="darts"',
    "space.C=4",
    "space.layers=3",
    "space.steps=1",
    "space.multiplier=1",
    "search.epochs=3",
    'search.grower="morphism"',
    "search.grow_max_nodes=3",
    "search.grow_every=1",
]


def test_search_resume_across_growth_equals_uninterrupted(tmp_path):
    """run_search stopped after a growth epoch and resumed ends like the uninterrupted run:
    same genotype, alphas and epoch records (sizes logged: 1, 2, 3 nodes)."""
    ref_cfg = load_config(None, [*TINY, f"run.out={tmp_path / 'a'}"])
    ref = RunDir(tmp_path / "a").create(ref_cfg)
    g_ref = run_search(ref_cfg, ref, log=lambda s: None)
    cfg = load_config(None, [*TINY, f"run.out={tmp_path / 'b'}"])
    run = RunDir(tmp_path / "b").create(cfg)
    run_search(cfg, run, log=lambda s: None, stop_after=1)
    g = run_search(cfg, RunDir(tmp_path / "b"), resume=True, log=lambda s: None)
    assert g == g_ref and len(g.normal) == 6
    a = RunDir(tmp_path / "a").load_checkpoint()["strategy"]["arch"]
    b = RunDir(tmp_path / "b").load_checkpoint()["strategy"]["arch"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    def epochs(path):
        recs = [r for r in RunDir(path).read_metrics() if r["kind"] == "epoch"]
        return [{k: v for k, v in r.items() if k not in ("time", "epoch_time_s")} for r in recs]

    assert epochs(tmp_path / "a") == epochs(tmp_path / "b")
    assert [r["nodes"] for r in epochs(tmp_path / "a")] == [1, 2, 3]
