"""Single-path search: a step runs and trains only the sampled ops; codecs; exact resume."""

from __future__ import annotations

import io

import pytest
import torch
from helpers import conv_counter, n_convs
from torch import nn

from diffnas.arch import ArchParameters
from diffnas.runs.config import SearchConfig
from diffnas.search import STRATEGIES
from diffnas.search.single_path import DartsCodec, NB201Codec, path_codec
from diffnas.spaces.darts_cnn import DartsSuperNet
from diffnas.spaces.genotypes import validate_darts
from diffnas.spaces.nb201 import NB201SuperNet
from diffnas.spaces.nb201 import SearchCell as NB201SearchCell

pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(space: str) -> nn.Module:
    """A tiny supernet of the space (DARTS: 3 cells, 4 nodes; NB201: C=4, N=1)."""
    if space == "darts":
        return DartsSuperNet(C=4, layers=3, in_channels=3, num_classes=3)
    return NB201SuperNet(C=4, N=1, in_channels=3, num_classes=3)


def make_search(space: str, strategy: str = "random_path", seed: int = 0, **kw):
    """A single-path strategy on a tiny supernet whose initial weights depend on `seed`."""
    torch.manual_seed(seed)
    model = make_model(space)
    arch = ArchParameters(model.arch_shapes())
    base = dict(strategy=strategy, w_lr=0.05, w_lr_min=0.001, epochs=4, novelty_archive=3,
                novelty_k=2, novelty_es_n=3)  # fmt: skip
    return STRATEGIES.get(strategy)(model, arch, SearchConfig(**{**base, **kw}))


def op_modules(model: nn.Module, weights: dict[str, torch.Tensor]):
    """(op module, weight of it) for every candidate op of every edge of every cell."""
    if isinstance(model, DartsSuperNet):
        for cell in model.cells:
            w = weights["reduce" if cell.reduction else "normal"]
            for e, mixed in enumerate(cell.ops):
                for o, op in enumerate(mixed.ops):
                    yield op, float(w[e, o])
    else:
        w = weights["cell"]
        for cell in model.cells:
            if isinstance(cell, NB201SearchCell):
                for e, mixed in enumerate(cell.edges):
                    for o, op in enumerate(mixed.ops):
                        yield op, float(w[e, o])


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_one_hot_path_runs_only_the_sampled_convolutions(space, make_batch):
    """Conv calls of a path = the fixed convs (stem, preprocessing, residual blocks) plus those of
    the sampled ops, far fewer than the supernet with every op on."""
    model = make_model(space)
    codec = path_codec(model)
    like = {k: torch.zeros(s) for k, s in model.arch_shapes().items()}
    weights = codec.weights(codec.sample_all(torch.Generator().manual_seed(1)), like)
    fixed = n_convs(model) - sum(n_convs(op) for op, _ in op_modules(model, weights))
    sampled = sum(n_convs(op) for op, w in op_modules(model, weights) if w != 0)
    x, _ = make_batch(n=2, h=16, w=16)
    with conv_counter(model) as calls:
        model(x, weights)
    assert calls[0] == fixed + sampled
    with conv_counter(model) as full:
        model(x, {k: torch.ones(s) for k, s in model.arch_shapes().items()})
    assert full[0] > 2 * calls[0]


@pytest.mark.parametrize("sample_none", [False, True])
@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_a_step_trains_only_the_sampled_ops(space, sample_none, make_batch):
    """After a step only sampled ops (and the shared stem/head) have gradients and change;
    every other op's parameters are bitwise untouched (weight decay and momentum included).
    Without `none` every sampled op reaches the output, so all of them get gradients."""
    search = make_search(space, w_weight_decay=0.1, path_sample_none=sample_none)
    search.step(make_batch(n=4, h=16, w=16, seed=9), None)  # momentum buffers for some ops
    before = {n: p.detach().clone() for n, p in search.model.named_parameters()}
    search.step(make_batch(n=4, h=16, w=16), None)
    weights = search.path_weights(search.current)
    sampled_params, other_params = set(), set()
    for op, w in op_modules(search.model, weights):
        (sampled_params if w != 0 else other_params).update(id(p) for p in op.parameters())
    assert sampled_params and other_params
    for name, p in search.model.named_parameters():
        if id(p) in other_params:
            assert p.grad is None, name
            assert torch.equal(p, before[name]), name
        elif id(p) in sampled_params and not sample_none:
            assert p.grad is not None, name
            assert not torch.equal(p, before[name]), name
    # The stem and the classifier are on every path.
    for name, p in search.model.named_parameters():
        if name.startswith(("stem.", "classifier.")):
            assert p.grad is not None and not torch.equal(p, before[name]), name


@pytest.mark.parametrize("sample_none", [True, False])
def test_darts_codec_samples_valid_cells_that_the_darts_rule_reads_back(sample_none):
    """Uniform samples are valid (two distinct inputs a node), give one one-hot row per sampled
    edge, and without `none` the DARTS rule on their weights derives the codec's genotype."""
    model = make_model("darts")
    codec = DartsCodec(model, sample_none)
    like = {k: torch.zeros(s) for k, s in model.arch_shapes().items()}
    gen = torch.Generator().manual_seed(0)
    ops_seen = set()
    for _ in range(40):
        encs = codec.sample_all(gen)
        assert all(codec.is_valid(e) for e in encs.values())
        w = codec.weights(encs, like)
        for kind in codec.kinds:
            assert int(w[kind].sum()) == 2 * model.steps
            assert int((w[kind].sum(-1) > 0).sum()) == 2 * model.steps  # distinct edges
        g = codec.genotype(encs)
        validate_darts(g, steps=model.steps)
        ops_seen |= {op for op, _ in g.normal + g.reduce}
        if not sample_none:
            assert model.genotype(w) == g
    assert ("none" in ops_seen) == sample_none


def test_nb201_codec_round_trip_and_bounds():
    """NB201: encode(genotype(e)) == e, the supernet's argmax rule reads the genotype back, and
    `none` is left out on request."""
    model = make_model("nb201")
    like = {"cell": torch.zeros(model.arch_shapes()["cell"])}
    gen = torch.Generator().manual_seed(0)
    for sample_none in (True, False):
        codec = NB201Codec(model, sample_none)
        for _ in range(20):
            encs = codec.sample_all(gen)
            g = codec.genotype(encs)
            assert torch.equal(codec.encode(g)["cell"], encs["cell"])
            assert model.genotype(codec.weights(encs, like)) == g
            assert sample_none or "none" not in g.ops


def test_unknown_supernet_has_no_codec():
    with pytest.raises(TypeError, match="no codec for Linear"):
        path_codec(nn.Linear(2, 2))


@pytest.mark.parametrize(
    "strategy,extra",
    [("random_path", {}), ("novelty", {}), ("novelty", {"novelty_reward_weight": 0.5})],
    ids=["random_path", "novelty", "novelty_pr"],
)
def test_single_path_resume_is_exact(strategy, extra, make_batch):
    """state_dict -> bytes -> a fresh search (other initial weights) mid-epoch; continuing gives
    the same architectures, weights, archive and counts bitwise."""
    batches = [make_batch(n=4, h=8, w=8, seed=s) for s in range(12)]
    val = iter(batches * 100)
    a = make_search("nb201", strategy, 0, novelty_reward_batches=1, **extra)
    a.on_epoch_start(1)
    for b in batches[:4]:  # 3 warm-up steps, then one ES step
        a.step(b, lambda: next(val))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make_search("nb201", strategy, 1, novelty_reward_batches=1, **extra)
    b.load_state_dict(torch.load(buf, weights_only=True))
    vals = {s: iter(batches * 100) for s in ("a", "b")}
    paths = {"a": [], "b": []}
    for name, s in (("a", a), ("b", b)):
        for batch in batches[4:8]:
            s.step(batch, lambda name=name: next(vals[name]))
            paths[name].append(s.codec.key(s.current))
    assert paths["a"] == paths["b"]
    assert a.arch_metrics() == b.arch_metrics()
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    sa, sb = a.sampler.state_dict(), b.sampler.state_dict()
    assert torch.equal(sa["gen"], sb["gen"])
    if strategy == "novelty":
        assert torch.equal(sa["theta"]["cell"], sb["theta"]["cell"])


def test_genotype_and_weights_follow_the_trained_path(make_batch):
    """arch.weights() (what the loop logs and diagnoses) are the one-hot weights of the path
    trained last, and genotype() its genotype; before any step both say what to do instead."""
    search = make_search("darts")
    with pytest.raises(RuntimeError, match="sample_rank"):
        search.genotype()
    search.step(make_batch(n=4, h=8, w=8), None)
    w = search.arch.weights()
    assert all(torch.equal(w[k], search.path_weights(search.current)[k]) for k in w)
    assert search.genotype() == search.codec.genotype(search.current)
    m = search.arch_metrics()
    assert m["distinct_archs"] == m["distinct_archs_epoch"] == 1
    ev = search.evaluate([make_batch(n=4, h=8, w=8, seed=5)])
    assert set(ev) == {"valid_loss", "valid_acc"}
