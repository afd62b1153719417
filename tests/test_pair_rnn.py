"""The two-input recurrent backbone: each candidate op computes what it names (the Hadamard
product exactly a*b), the search cell is the mixture of its ops, the derivation keeps every
node's strongest op, the genotype round-trips and is checked, and the final cell trains as a
recurrent core in language modelling and forecasting (with clear errors for a wrong core)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY_LM, write_tiny_corpus

from diffnas.runs.config import ConfigError, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import run_search
from diffnas.spaces import SPACES, space_tasks
from diffnas.spaces.genotypes import (
    PAIR_RNN_OPS,
    GenotypeError,
    PairRNNGenotype,
    genotype_from_json,
    genotype_to_json,
    load_genotype,
)
from diffnas.spaces.pair_rnn import (
    PAIR_OPS,
    PairRNNCell,
    PairRNNSearchCell,
    PairRNNSuperNet,
    derive_pair_genotype,
)
from diffnas.train.lm import build_language_model

LM_TINY = ['space.name="pair_rnn"', "space.steps=3", *TINY_LM, "data.limit=120"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"), seed=2)


def _highway(cell, x, h):
    """s0 of the highway node from its definition ([x; h] W0 as x W0[:in] + h W0[in:], the
    order of the cell's own sums, so the result is bitwise the cell's)."""
    d, n = cell.hidden_size, cell.input_size
    c0, h0 = (x @ cell.W0[:n] + h @ cell.W0[n:]).split(d, -1)
    return h + torch.sigmoid(c0) * (torch.tanh(h0) - h)


def test_each_op_computes_its_formula(float64):
    """g(a, b) of every candidate from its definition; Hadamard bit-for-bit a * b."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    wl, wg = torch.randn(8, 4, generator=g), torch.randn(4, 4, generator=g)
    z = {"linear": torch.cat([a, b], -1) @ wl, "gate": a @ wg}
    assert torch.equal(PAIR_OPS.get("hadamard")(a, b, z), a * b)
    assert torch.equal(PAIR_OPS.get("add")(a, b, z), 0.5 * (a + b))
    assert torch.equal(PAIR_OPS.get("identity")(a, b, z), a)
    torch.testing.assert_close(PAIR_OPS.get("gate")(a, b, z), torch.sigmoid(a @ wg) * b)
    torch.testing.assert_close(PAIR_OPS.get("tanh")(a, b, z), torch.tanh(z["linear"]))
    torch.testing.assert_close(PAIR_OPS.get("relu")(a, b, z), torch.relu(z["linear"]))
    assert set(PAIR_OPS.names()) | {"none"} == set(PAIR_RNN_OPS)


def test_hadamard_cell_multiplies_its_inputs_exactly(float64):
    """A one-node final cell with the Hadamard op and b = s0 outputs h_t = s0 * s0, and with
    b = h_(t-1), s0 * h_(t-1): exactly, through the time loop."""
    torch.manual_seed(0)
    x, h = torch.randn(1, 3, 4), torch.randn(3, 4)
    for second, b in (("s0", None), ("hidden", h)):
        cell = PairRNNCell(4, 4, PairRNNGenotype(("hadamard",), second)).eval()
        out, last = cell(x, h)
        s0 = _highway(cell, x[0], h)
        assert torch.equal(out[0], s0 * (s0 if b is None else b))
        assert torch.equal(last, out[0])
    assert not list(cell.mats)  # the Hadamard node has no matrix


@pytest.mark.parametrize("second", ["s0", "previous", "hidden"])
@pytest.mark.parametrize("output", ["mean", "last"])
def test_search_cell_is_the_weighted_mixture_and_one_hot_is_the_final_cell(float64, second, output):
    """The search cell without BN under one-hot weights equals the final cell of that genotype
    (same matrices); under general weights each node is sum_o w_o g_o(a, b)."""
    torch.manual_seed(1)
    ops = tuple(o for o in PAIR_RNN_OPS if o != "none")
    search = PairRNNSearchCell(4, 4, 3, ops, second, output, batch_norm=False).eval()
    genotype = PairRNNGenotype(("gate", "hadamard", "tanh"), second, output)
    final = PairRNNCell(4, 4, genotype).eval()
    final.W0.data.copy_(search.W0)
    for name, p in final.mats.items():
        p.data.copy_(search.mats[name])
    one_hot = torch.zeros(3, len(ops))
    for k, op in enumerate(genotype.ops):
        one_hot[k, ops.index(op)] = 1.0
    x = torch.randn(4, 2, 4)
    torch.testing.assert_close(search(x, None, one_hot)[0], final(x)[0], rtol=0, atol=1e-12)
    # A direct mixture at one time step.
    w = torch.softmax(torch.randn(3, len(ops)), -1)
    h = torch.randn(2, 4)
    s = [_highway(search, x[0], h)]
    for k in range(1, 4):
        a = s[k - 1]
        b = {"s0": s[0], "previous": s[max(k - 2, 0)], "hidden": h}[second]
        z = {
            "linear": torch.cat([a, b], -1) @ search.mats[f"linear_{k}"],
            "gate": a @ search.mats[f"gate_{k}"],
        }
        s.append(sum(w[k - 1, i] * PAIR_OPS.get(o)(a, b, z) for i, o in enumerate(ops)))
    want = torch.stack(s[1:]).mean(0) if output == "mean" else s[-1]
    torch.testing.assert_close(search(x[:1], h, w)[0][0], want)


@pytest.mark.parametrize("second", ["s0", "previous", "hidden"])
def test_final_cells_without_relu_keep_their_states_bounded(second):
    """Every op but relu maps states in [-1, 1] into [-1, 1], so any such cell keeps |h_t| <= 1
    over a long sequence, however large its inputs (the highway node bounds s0)."""
    torch.manual_seed(0)
    x = 10 * torch.randn(200, 4, 3)
    for op in ("hadamard", "add", "gate", "tanh", "identity"):
        for output in ("mean", "last"):
            cell = PairRNNCell(3, 5, PairRNNGenotype((op,) * 8, second, output))
            with torch.no_grad():
                for p in cell.parameters():
                    p.mul_(50)  # large matrices, saturated gates
                out, _ = cell(x)
            assert out.abs().max() <= 1 + 1e-6, (op, output)


def test_derivation_keeps_every_node_with_its_best_real_op():
    ops = ("none", "hadamard", "add", "identity")
    w = torch.tensor([[0.9, 0.05, 0.03, 0.02], [0.1, 0.2, 0.6, 0.1], [0.0, 0.3, 0.3, 0.4]])
    g = derive_pair_genotype(w, ops, "previous", "last")
    assert g == PairRNNGenotype(("hadamard", "add", "identity"), "previous", "last")
    net = PairRNNSuperNet(7, 4, PairRNNSearchCell(4, 4, 3, ops, "previous", "last"))
    projected = net.project({"rnn": w})["rnn"]
    assert projected.sum(1).tolist() == [1.0, 1.0, 1.0] and projected[0, 1] == 1.0


def test_genotype_round_trips_and_bad_genotypes_are_named(tmp_path):
    g = PairRNNGenotype(("hadamard", "gate", "identity"), "hidden", "last")
    assert load_genotype(str(g)) == g
    assert genotype_from_json(json.loads(json.dumps(genotype_to_json(g)))) == g
    (tmp_path / "genotype.json").write_text(json.dumps(genotype_to_json(g)))
    assert load_genotype(str(tmp_path)) == g
    with pytest.raises(GenotypeError, match="node 2: unknown op 'conv'"):
        PairRNNGenotype(("hadamard", "conv"))
    with pytest.raises(GenotypeError, match="node 1: unknown op 'none'"):
        PairRNNGenotype(("none",))
    with pytest.raises(GenotypeError, match="second.*allowed: s0, previous, hidden"):
        PairRNNGenotype(("add",), second="x")
    with pytest.raises(GenotypeError, match="output"):
        genotype_from_json({"space": "pair_rnn", "ops": ["add"], "output": "max"})


def test_cores_and_their_errors():
    """lm.core = pair_rnn builds the final cell; a genotype of the other recurrent family names
    the core to set."""
    cfg = load_config(None, ["lm.emsize=6", "lm.nhid=6", "lm.core=pair_rnn"]).lm
    g = PairRNNGenotype(("hadamard", "tanh"))
    model = build_language_model(cfg, 20, g)
    assert isinstance(model.core, PairRNNCell) and model.core.steps == 2
    with pytest.raises(ConfigError, match="pair_rnn core needs a two-input RNN genotype"):
        build_language_model(cfg, 20, load_genotype("DARTS_RNN_V2"))
    with pytest.raises(ConfigError, match="darts_rnn cell: set lm.core = 'darts_rnn'"):
        build_language_model(cfg, 20, load_genotype("DARTS_RNN_V2"))
    cfg.core = "darts_rnn"
    with pytest.raises(ConfigError, match="pair_rnn cell: set lm.core = 'pair_rnn'"):
        build_language_model(cfg, 20, g)


def test_space_is_registered_for_lm_and_forecast():
    assert "pair_rnn" in SPACES.names()
    assert space_tasks("pair_rnn") == ("lm", "forecast")


def test_lm_search_then_final_training(corpus_dir, tmp_path):
    """A pair_rnn search on a tiny corpus writes a two-input genotype that `train --task lm`
    trains with lm.core = pair_rnn."""
    out = tmp_path / "search"
    cfg = load_config(
        "configs/pair_rnn_ptb.toml",
        [*LM_TINY, f"lm.data_dir={corpus_dir}", f"run.out={out}", "search.epochs=1"],
    )
    g = run_search(cfg, RunDir(out).create(cfg), log=lambda s: None)
    assert isinstance(g, PairRNNGenotype) and len(g.ops) == 3
    assert load_genotype(str(out)) == g
    from diffnas import cli

    train = tmp_path / "train"
    sets = [
        f"--set={s}"
        for s in [*LM_TINY[2:], f"lm.data_dir={corpus_dir}", "train.epochs=1", "lm.core=pair_rnn"]
    ]
    assert cli.main(["train", "--genotype", str(out), "--out", str(train), *sets]) == 0
    result = json.loads((train / "result.json").read_text())
    assert result["core"] == "pair_rnn" and result["test_ppl"] > 1


def test_single_path_novelty_search_and_sample_rank(corpus_dir, tmp_path):
    """EN²AS on the two-input backbone: one op per node sampled (never `none`), the codec
    round-trips genotypes, and sample_rank picks a two-input genotype by perplexity."""
    from diffnas.search.single_path import path_codec
    from diffnas.select import open_select_dir, run_select

    net = PairRNNSuperNet(7, 4, PairRNNSearchCell(4, 4, 3, PAIR_RNN_OPS, "hidden", "last"))
    codec = path_codec(net)
    enc = {"rnn": codec.sample(torch.Generator().manual_seed(0))}
    g = codec.genotype(enc)
    assert isinstance(g, PairRNNGenotype) and g.second == "hidden" and "none" not in g.ops
    assert torch.equal(codec.encode(g)["rnn"], enc["rnn"])
    w = codec.weights(enc, {"rnn": torch.zeros(net.arch_shapes()["rnn"])})
    assert w["rnn"].sum(1).tolist() == [1.0] * 3
    novelty = [
        'search.strategy="novelty"',
        "search.epochs=2",
        "search.novelty_archive=4",
        "search.novelty_k=2",
        "search.novelty_es_n=2",
    ]
    out = tmp_path / "s"
    cfg = load_config(
        "configs/pair_rnn_ptb.toml",
        [*LM_TINY, f"lm.data_dir={corpus_dir}", f"run.out={out}", *novelty],
    )
    assert isinstance(run_search(cfg, RunDir(out).create(cfg), log=lambda s: None), PairRNNGenotype)
    sel = ["select.sample_n=3", "select.sample_top_k=2", "select.sample_batches=2"]
    cfg, run = open_select_dir(out, "sample_rank", sel, out=tmp_path / "sel")
    best = run_select(cfg, out, run, log=lambda s: None)
    assert isinstance(best, PairRNNGenotype) and len(best.ops) == 3


def test_only_live_ops_matrices_are_multiplied():
    """Under weights that keep only parameter-free ops (a single path of hadamard / add), the
    search cell multiplies no matrix of its nodes, only W0's halves: a step costs what its
    live ops cost; a live tanh adds its node's linear map."""
    from torch.overrides import TorchFunctionMode

    class CountMatmuls(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.n += func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)
            return func(*args, **(kwargs or {}))

    cell = PairRNNSearchCell(3, 4, 2, PAIR_RNN_OPS).eval()
    ops = list(PAIR_RNN_OPS)
    w = torch.zeros(2, len(ops))
    w[0, ops.index("hadamard")] = w[1, ops.index("add")] = 1.0
    x = torch.randn(5, 2, 3)
    counts = []
    for extra in (None, "tanh"):
        if extra:
            w[1, ops.index(extra)] = 0.5
        with torch.no_grad(), CountMatmuls() as mode:
            cell(x, None, w)
        counts.append(mode.n)
    assert counts == [1 + 5, 1 + 5 + 5]  # x W0[:in] once, h W0[in:] per step (+ Wl per step)
