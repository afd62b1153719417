"""The DARTS RNN space: search cell vs final cell, derivation, genotypes, hidden-state carry."""

from __future__ import annotations

import json

import pytest
import torch

from diffnas.arch import ArchParameters
from diffnas.spaces import SPACES, space_task
from diffnas.spaces.darts_rnn import (
    RNN_ACTIVATIONS,
    DartsRNNCell,
    DartsRNNSearchCell,
    DartsRNNSuperNet,
    edge_offset,
    n_edges,
)
from diffnas.spaces.final import count_params
from diffnas.spaces.genotypes import (
    DARTS_RNN_OPS,
    GenotypeError,
    RNNGenotype,
    genotype_from_json,
    genotype_to_json,
    load_genotype,
)
from diffnas.spaces.language_model import RNNLanguageModel
from diffnas.spaces.recurrent import build_core


def random_setup(seed=0, d=6, steps=8, batch_norm=False, dropouts=0.0):
    """A search cell with random alphas (std 1) and its derived final cell, same W0/W_i."""
    torch.manual_seed(seed)
    cell = DartsRNNSearchCell(
        5, d, steps, dropouth=dropouts, dropoutx=dropouts, batch_norm=batch_norm
    )
    arch = ArchParameters({"rnn": (n_edges(steps), len(DARTS_RNN_OPS))}, init_std=1.0)
    net = DartsRNNSuperNet(11, 5, 5, steps)  # only for its derivation rule and projection
    weights = arch.weights()
    genotype = net.genotype(weights)
    final = DartsRNNCell(5, d, genotype, dropouth=dropouts, dropoutx=dropouts)
    final.load_state_dict(cell.state_dict())
    return cell, final, net.project(weights)["rnn"], genotype


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_hot_search_cell_is_the_final_cell(float64, seed):
    """With the one-hot weights of the derived genotype, the search cell computes the final
    cell of that genotype: outputs and last hidden state, eval mode and train mode (same masks)."""
    cell, final, one_hot, genotype = random_setup(seed)
    assert one_hot.sum().item() == 8 and set(one_hot.unique().tolist()) == {0.0, 1.0}
    x, h = torch.randn(7, 3, 5), torch.randn(3, 6)
    for mode in ("eval", "train"):
        cell.train(mode == "train")
        final.train(mode == "train")
        torch.manual_seed(5)
        out_s, h_s = cell(x, h, one_hot)
        torch.manual_seed(5)
        out_f, h_f = final(x, h)
        torch.testing.assert_close(out_s, out_f, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h_s, h_f, rtol=1e-12, atol=1e-12)
    # The cell is not trivially constant: another genotype computes something else.
    other = RNNGenotype([("tanh", 0)] * 8, list(range(1, 9)))
    if other != genotype:
        f2 = DartsRNNCell(5, 6, other)
        f2.load_state_dict(cell.state_dict())
        cell.eval()
        assert not torch.allclose(f2.eval()(x, h)[0], cell(x, h, one_hot)[0])


def test_search_cell_matches_a_direct_mixture(float64):
    """The search cell's batched formula equals the definition: node i sums, over every edge
    (j -> i) and every non-none op o, w * (s_j + c_j (f_o(h_j) - s_j)), (c_j, h_j) = s_j W_i."""
    torch.manual_seed(3)
    cell = DartsRNNSearchCell(4, 5, steps=3, batch_norm=False).eval()
    w = torch.rand(n_edges(3), len(DARTS_RNN_OPS))
    x, h = torch.randn(1, 2, 4), torch.randn(2, 5)
    out, _ = cell(x, h, w)
    c0, h0 = (torch.cat([x[0], h], -1) @ cell.W0).split(5, -1)
    states = [h + c0.sigmoid() * (h0.tanh() - h)]
    for i in range(1, 4):
        s = 0
        for j in range(i):
            c, hh = (states[j] @ cell.Ws[i - 1]).split(5, -1)
            for k, op in enumerate(DARTS_RNN_OPS):
                if op != "none":
                    f = RNN_ACTIVATIONS.get(op)(hh)
                    s = s + w[edge_offset(i) + j, k] * (states[j] + c.sigmoid() * (f - states[j]))
        states.append(s)
    torch.testing.assert_close(out[0], torch.stack(states[1:]).mean(0))


def test_zero_weight_ops_never_run_and_masking_changes_output(monkeypatch):
    """An op whose weight is zero on every edge is never called; zeroing one op's weight on one
    edge changes the output."""
    torch.manual_seed(0)
    cell = DartsRNNSearchCell(4, 4, steps=3).eval()
    w = torch.rand(n_edges(3), len(DARTS_RNN_OPS))
    x = torch.randn(3, 2, 4)
    base, _ = cell(x, None, w)
    masked = w.clone()
    masked[1, DARTS_RNN_OPS.index("tanh")] = 0.0
    assert not torch.allclose(cell(x, None, masked)[0], base)
    no_relu = w.clone()
    no_relu[:, DARTS_RNN_OPS.index("relu")] = 0.0

    def boom(h):
        raise AssertionError("relu ran with weight 0")

    monkeypatch.setitem(RNN_ACTIVATIONS._items, "relu", boom)
    cell(x, None, no_relu)  # must not call relu
    with pytest.raises(AssertionError, match="relu ran"):
        cell(x, None, w)


def test_derivation_rule_on_hand_built_weights():
    """Per node: the edge with the largest non-none weight, its best non-none op; `none` is
    ignored however large; the concat is nodes 1..8."""
    net = DartsRNNSuperNet(7, 4, 4)
    w = torch.full((36, 5), 0.1)
    want = [
        ("tanh", 0),
        ("relu", 1),
        ("sigmoid", 0),
        ("identity", 3),
        ("tanh", 2),
        ("relu", 5),
        ("sigmoid", 6),
        ("identity", 7),
    ]
    for node, (op, j) in enumerate(want, start=1):
        w[edge_offset(node) + j, DARTS_RNN_OPS.index(op)] = 0.5
        # A larger `none` on another edge must not win.
        w[edge_offset(node) + (j + 1) % node, 0] = 0.9
    g = net.genotype({"rnn": w})
    assert g == RNNGenotype(want, list(range(1, 9)))
    one_hot = net.project({"rnn": w})["rnn"]
    assert one_hot.sum(1).tolist().count(1.0) == 8
    for node, (op, j) in enumerate(want, start=1):
        assert one_hot[edge_offset(node) + j, DARTS_RNN_OPS.index(op)] == 1.0


def test_genotype_json_text_and_published_names(tmp_path):
    """RNN genotypes round-trip through JSON, their printed form, the original code's
    `Genotype(recurrent=..., concat=range(1, 9))` text, a genotype.json and a run directory."""
    g = load_genotype("DARTS_RNN_V2")
    assert g.recurrent[0] == ("sigmoid", 0) and g.concat == list(range(1, 9))
    assert load_genotype("DARTS_RNN_V1").recurrent[5] == ("identity", 1)
    d = genotype_to_json(g)
    assert d["space"] == "darts_rnn"
    assert genotype_from_json(json.loads(json.dumps(d))) == g
    assert load_genotype(str(g)) == g
    original = (
        "Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), "
        "('tanh', 2), ('sigmoid', 5), ('tanh', 3), ('relu', 5)], concat=range(1, 9))"
    )
    assert load_genotype(original) == g
    (tmp_path / "genotype.json").write_text(json.dumps(d))
    assert load_genotype(str(tmp_path)) == g
    with pytest.raises(GenotypeError, match=r"recurrent\[2\]: input 3 of node 3"):
        load_genotype(
            '{"space": "darts_rnn", "recurrent": [["tanh", 0], ["tanh", 1], '
            '["tanh", 3]], "concat": [1, 2, 3]}'
        )
    with pytest.raises(GenotypeError, match="unknown op 'none'"):
        load_genotype('{"space": "darts_rnn", "recurrent": [["none", 0]], "concat": [1]}')


def test_space_registry_and_paper_size():
    """`darts_rnn` is a registered LM space; the published cell at the paper's PTB size (850
    units, 10k words, tied) has the paper's 23M parameters."""
    assert "darts_rnn" in SPACES and space_task("darts_rnn") == "lm"
    assert space_task("nb201") == "image"
    core = build_core("darts_rnn", 850, 850, genotype=load_genotype("DARTS_RNN_V2"))
    model = RNNLanguageModel(10000, 850, core)
    assert model.decoder.weight is model.encoder.weight
    assert abs(count_params(model) / 1e6 - 23.0) < 0.1
    with pytest.raises(ValueError, match="needs a DARTS RNN genotype.*none was given"):
        build_core("darts_rnn", 4, 4)


@pytest.mark.parametrize("kind", ["final", "search", "lstm", "gru"])
def test_hidden_state_carries_across_segments(float64, kind):
    """Running a sequence in two segments, passing the hidden state on, equals one pass."""
    torch.manual_seed(0)
    if kind == "final":
        core = build_core("darts_rnn", 4, 6, genotype=load_genotype("DARTS_RNN_V1"))
        run = core
    elif kind == "search":
        cell = DartsRNNSearchCell(4, 6)  # BatchNorm in eval mode: running statistics
        w = torch.softmax(torch.randn(36, 5), -1)

        def run(x, h):
            return cell(x, h, w)

        core = cell
    else:
        core = build_core(kind, 4, 6)
        run = core
    core.eval()
    x = torch.randn(9, 3, 4)
    full, h_full = run(x, None)
    a, h = run(x[:4], None)
    b, h2 = run(x[4:], h)
    torch.testing.assert_close(torch.cat([a, b]), full)
    h_full = h_full if isinstance(h_full, tuple) else (h_full,)
    h2 = h2 if isinstance(h2, tuple) else (h2,)
    for p, q in zip(h2, h_full, strict=True):
        torch.testing.assert_close(p, q)
    # A fresh zero state for the second segment gives something else.
    assert not torch.allclose(run(x[4:], None)[0], b)
