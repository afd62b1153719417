"""Genotypes as data (round trips, clear errors) and the derivation rules on hand-built weights."""

from __future__ import annotations

import json
import random

import pytest
import torch

from diffnas.spaces import SPACES
from diffnas.spaces.darts_cnn import DartsSuperNet, derive_cell, edge_list
from diffnas.spaces.genotypes import (
    DARTS_OPS,
    NB201_OPS,
    Genotype,
    GenotypeError,
    NB201Genotype,
    darts_from_json,
    darts_from_string,
    darts_to_json,
    genotype_from_json,
    genotype_to_json,
    load_genotype,
    validate_darts,
)
from diffnas.spaces.nb201 import NB201SuperNet
from diffnas.spaces.robust_darts import ROBUST_DARTS_OP_SETS

# DARTS_V2 from quark0/darts genotypes.py (edges in the original's strength order).
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)
NB201_BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|" \
    "nor_conv_3x3~2|"
NB201_OK = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def random_darts(rng: random.Random, steps: int = 4) -> Genotype:
    """A random valid DARTS genotype (two (op, input) edges per node)."""
    ops = [o for o in DARTS_OPS if o != "none"]

    def cell():
        return [(rng.choice(ops), rng.randrange(i + 2)) for i in range(steps) for _ in range(2)]

    concat = list(range(2, steps + 2))
    return Genotype(cell(), concat, cell(), concat)


def node_sets(gene: list[tuple[str, int]]) -> list[list[tuple[str, int]]]:
    """The edges of each node, order-free (a node sums its two inputs)."""
    return [sorted(gene[i : i + 2]) for i in range(0, len(gene), 2)]


# ----------------------------------------------------------------------------- NB201 strings


def test_nb201_string_round_trip_random_cells():
    """to_string/from_string, to_json/from_json, tagged JSON and load_genotype are inverses."""
    rng = random.Random(0)
    for _ in range(50):
        g = NB201Genotype(tuple(rng.choice(NB201_OPS) for _ in range(6)))
        s = g.to_string()
        assert str(g) == s
        assert NB201Genotype.from_string(s) == g
        assert NB201Genotype.from_json(json.loads(json.dumps(g.to_json()))) == g
        assert genotype_from_json(json.loads(json.dumps(genotype_to_json(g)))) == g
        assert load_genotype(s) == g


def test_nb201_string_edge_order():
    """ops[k] follows the string order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2."""
    g = NB201Genotype.from_string(NB201_BEST)
    assert g.ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect",
                     "nor_conv_1x1", "nor_conv_3x3")
    assert NB201Genotype.EDGES == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert g.to_string() == NB201_BEST


# ----------------------------------------------------------------------------- DARTS forms


def test_darts_json_round_trip():
    """darts_to_json -> json text -> darts_from_json gives the genotype back (tuples, lists)."""
    rng = random.Random(1)
    for g in [DARTS_V2] + [random_darts(rng) for _ in range(20)] + [random_darts(rng, 3)]:
        d = json.loads(json.dumps(darts_to_json(g)))
        assert set(d) == set(Genotype._fields)
        back = darts_from_json(d)
        assert back == g
        assert all(isinstance(e, tuple) for e in back.normal + back.reduce)
        assert genotype_from_json(json.loads(json.dumps(genotype_to_json(g)))) == g


@pytest.mark.parametrize("concat", [[2, 3, 4, 5], range(2, 6)], ids=["list", "range"])
def test_darts_printed_namedtuple_round_trip(concat):
    """darts_from_string(str(g)) == g, with the concat given as a list or as range(2, 6)."""
    g = DARTS_V2._replace(normal_concat=concat, reduce_concat=concat)
    text = str(g)
    assert text.startswith("Genotype(normal=[")
    back = darts_from_string(text)
    assert back.normal == DARTS_V2.normal and back.reduce == DARTS_V2.reduce
    assert back.normal_concat == [2, 3, 4, 5] and back.reduce_concat == [2, 3, 4, 5]
    assert load_genotype("  " + text + "\n") == back


def test_load_genotype_from_paths_and_text(tmp_path):
    """load_genotype reads a json file, a run dir's genotype.json, JSON text and raw strings."""
    tagged = json.dumps(genotype_to_json(DARTS_V2))
    f = tmp_path / "best.json"
    f.write_text(tagged)
    assert load_genotype(str(f)) == DARTS_V2
    run = tmp_path / "run"
    run.mkdir()
    (run / "genotype.json").write_text(json.dumps(genotype_to_json(NB201Genotype.from_string(
        NB201_BEST))))
    assert load_genotype(str(run)).to_string() == NB201_BEST
    assert load_genotype(tagged) == DARTS_V2
    assert load_genotype(NB201_BEST) == NB201Genotype.from_string(NB201_BEST)
    txt = tmp_path / "genotype.txt"
    txt.write_text(str(DARTS_V2) + "\n")
    assert load_genotype(str(txt)) == DARTS_V2
    with pytest.raises(GenotypeError, match="nor an existing genotype.json"):
        load_genotype(str(tmp_path / "missing"))


def test_published_names_ignore_case_and_near_misses_get_a_suggestion(tmp_path):
    assert load_genotype("darts_v2") == load_genotype("DARTS_V2") == DARTS_V2
    with pytest.raises(GenotypeError, match="Did you mean DARTS_V2"):
        load_genotype("DARTS_V3x")


def test_genotype_files_that_are_broken_name_the_file(tmp_path):
    cut = tmp_path / "genotype.json"
    cut.write_text(json.dumps(genotype_to_json(DARTS_V2))[:40])
    with pytest.raises(GenotypeError, match=f"{cut} is not valid genotype JSON"):
        load_genotype(str(cut))
    binary = tmp_path / "g.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(GenotypeError, match="not UTF-8"):
        load_genotype(str(binary))
    unfinished = tmp_path / "run"
    unfinished.mkdir()
    (unfinished / "config.toml").write_text("")
    with pytest.raises(GenotypeError, match="has no genotype.json yet"):
        load_genotype(str(unfinished))


# ----------------------------------------------------------------------------- errors


def _darts_with(kind_edges=None, concat=None) -> dict:
    """DARTS_V2 as JSON with its normal edges and/or normal concat replaced."""
    d = darts_to_json(DARTS_V2)
    if kind_edges is not None:
        d["normal"] = kind_edges
    if concat is not None:
        d["normal_concat"] = concat
    return d


V2_EDGES = [list(e) for e in DARTS_V2.normal]


def _first_edge(edge) -> dict:
    """DARTS_V2 as JSON with its first normal edge replaced."""
    return _darts_with([edge] + V2_EDGES[1:])


MALFORMED = [
    # (callable, argument, key phrase of the message)
    (darts_from_json, _first_edge(["sep_conv_9x9", 0]), "unknown op 'sep_conv_9x9'"),
    (darts_from_json, _first_edge(["sep_conv_3x3", 2]), "must be an int in [0, 1]"),
    (darts_from_json, _darts_with(V2_EDGES[:-1] + [["skip_connect", 5]]), "in [0, 4]"),
    (darts_from_json, _first_edge(["sep_conv_3x3", "0"]), "must be an int"),
    (darts_from_json, _darts_with(V2_EDGES[:-1]), "two per node"),
    (darts_from_json, _darts_with([], None), "two per node"),
    (darts_from_json, _first_edge(["sep_conv_3x3"]), "expected (op, input)"),
    (darts_from_json, _darts_with(concat=[2, 3, 6]), "normal_concat"),
    (darts_from_json, {"normal": V2_EDGES, "normal_concat": [2]}, "missing ['reduce'"),
    (darts_from_json, {**darts_to_json(DARTS_V2), "extra": 1}, "unexpected ['extra']"),
    (darts_from_json, [1, 2], "expected a JSON object"),
    (darts_from_string, "Genotype(normal=[(])", "cannot parse"),
    (darts_from_string, "Foo(normal=[])", "Genotype(normal=[...]"),
    (darts_from_string, "Genotype(normal=[('sep_conv_3x3', 0)])", "missing"),
    (NB201Genotype.from_string, "|none~0|+|none~0|none~1|", "3 nodes"),
    (NB201Genotype.from_string, NB201_OK + "+|none~0|", "3 nodes"),
    (NB201Genotype.from_string, "|none~0|+|none~0|none~1|none~2|+|none~0|none~1|none~2|",
     "node 2 must have 2 inputs"),
    (NB201Genotype.from_string, "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
     "expected 'op~0'"),
    (NB201Genotype.from_string, "|none~0|+|none~0|none~1|+|none~0|none~2|none~1|",
     "expected 'op~1'"),
    (NB201Genotype.from_string, "|none0|+|none~0|none~1|+|none~0|none~1|none~2|",
     "expected 'op~0'"),
    (NB201Genotype.from_string, "none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
     "must start and end with '|'"),
    (NB201Genotype.from_string, NB201_OK.replace("none~1|none~2", "sep_conv_3x3~1|none~2"),
     "edge 1->3: unknown op 'sep_conv_3x3'"),
    (NB201Genotype, ("none",) * 5, "6 edges"),
    (NB201Genotype.from_json, {"arch": NB201_OK, "x": 1}, '{"arch"'),
    (genotype_from_json, {"arch": NB201_OK}, '"space" key'),
    (genotype_from_json, {"space": "rnn", "arch": NB201_OK}, "unknown genotype space 'rnn'"),
    (genotype_from_json, {"space": "darts", "normal": V2_EDGES}, "missing"),
    (load_genotype, "surely/not/a/genotype", "nor an existing genotype.json"),
    (load_genotype, "{not json", "neither an NB201 string"),
    (load_genotype, '{"space": "nb201", "arch": "|x~0|"}', "3 nodes"),
]


@pytest.mark.parametrize("fn,arg,phrase", MALFORMED,
                         ids=[f"{i}-{m[0].__name__}" for i, m in enumerate(MALFORMED)])
def test_malformed_genotypes_raise_clear_errors(fn, arg, phrase):
    """Every malformed input raises GenotypeError (a ValueError) whose message names the fault."""
    with pytest.raises(GenotypeError) as info:
        fn(arg)
    assert isinstance(info.value, ValueError)
    assert phrase in str(info.value), str(info.value)


def test_validate_darts_checks_step_count():
    """validate_darts(g, steps) refuses a genotype with a different number of nodes."""
    assert validate_darts(DARTS_V2, steps=4) == DARTS_V2
    with pytest.raises(GenotypeError, match="the space has 5"):
        validate_darts(DARTS_V2, steps=5)


@pytest.mark.parametrize("field", ["normal", "normal_concat"])
def test_json_with_null_fields_raises_genotype_error(field):
    """A JSON genotype with a null (non-list) field raises GenotypeError, not a TypeError."""
    d = darts_to_json(DARTS_V2)
    d[field] = None
    with pytest.raises(GenotypeError, match=field):
        darts_from_json(d)


# ----------------------------------------------------------------------------- derivation

NONE, MAX, AVG, SKIP, SEP3, SEP5, DIL3, DIL5 = range(8)


def hand_built_darts_weights() -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """14x8 weights with a known DARTS derivation (`none` largest on several edges)."""
    w = torch.full((14, 8), 0.01)
    # node 0 (edges 0, 1): both inputs kept; `none` is the largest weight on edge 0.
    w[0, NONE], w[0, SEP3] = 0.9, 0.05
    w[1, MAX] = 0.2
    # node 1 (edges 2-4): edge 2 has a huge `none` but weak real ops, so it is dropped.
    w[2, NONE] = 0.99
    w[3, SKIP] = 0.4
    w[4, DIL3], w[4, NONE] = 0.5, 0.7
    # node 2 (edges 5-8): inputs 3 (0.6) and 0 (0.3) beat input 1 (0.29).
    w[5, AVG] = 0.3
    w[6, SEP3] = 0.29
    w[8, SEP5] = 0.6
    # node 3 (edges 9-13): inputs 1, 3, 4 tie at 0.5, so the two earliest (1 and 3) are kept.
    w[9, DIL5] = 0.2
    w[10, MAX] = 0.5
    w[11, SKIP] = 0.1
    w[12, DIL5] = 0.5
    w[13, SEP3] = 0.5
    expected = [
        ("sep_conv_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 1), ("dil_conv_3x3", 2),
        ("avg_pool_3x3", 0), ("sep_conv_5x5", 3),
        ("max_pool_3x3", 1), ("dil_conv_5x5", 3),
    ]
    return w, expected


def test_darts_rule_on_hand_built_weights():
    """Per node: top-2 inputs by best non-`none` weight, then that op; ties -> earlier input."""
    w, expected = hand_built_darts_weights()
    model = DartsSuperNet(C=4, layers=1)
    g = model.genotype({"normal": w, "reduce": 3 * w})
    assert node_sets(g.normal) == node_sets(expected)
    assert g.normal_concat == [2, 3, 4, 5] and g.reduce_concat == [2, 3, 4, 5]
    assert all(op != "none" for op, _ in g.normal + g.reduce)
    assert g.reduce == g.normal  # the rule only compares weights: scaling changes nothing
    validate_darts(g, steps=4)


def test_darts_rule_matches_brute_force_on_random_weights():
    """On random weights every kept pair beats every dropped input on its best non-none weight."""
    gen = torch.Generator().manual_seed(0)
    edges = edge_list(4)
    for _ in range(20):
        w = torch.rand(14, 8, generator=gen)
        gene = derive_cell(w, [DARTS_OPS] * 14, 4)
        for node, pair in zip(range(2, 6), node_sets(gene), strict=True):
            rows = {j: e for e, (j, to) in enumerate(edges) if to == node}
            best = {j: w[e, 1:].max().item() for j, e in rows.items()}
            kept = {j for _, j in pair}
            assert len(kept) == 2
            dropped = [best[j] for j in rows if j not in kept]
            assert min(best[j] for j in kept) > max(dropped, default=-1.0)
            for op, j in pair:
                assert op == DARTS_OPS[1 + int(w[rows[j], 1:].argmax())]


def test_darts_rule_op_tie_picks_first_op():
    """Two non-none ops tied on an edge: the first in op order wins, as in quark0/darts `_parse`."""
    w = torch.full((14, 8), 0.01)
    w[0, SEP3] = w[0, SEP5] = 0.5
    w[1, MAX] = w[1, AVG] = 0.3
    gene = derive_cell(w, [DARTS_OPS] * 14, 4)
    assert node_sets(gene)[0] == [("max_pool_3x3", 1), ("sep_conv_3x3", 0)]


def test_darts_rule_keeps_float64_precision():
    """Float64 weights that differ below float32 resolution still rank by their true order."""
    w = torch.full((14, 8), 0.01, dtype=torch.float64)
    w[0, SEP3], w[0, SEP5] = 0.3 + 1e-12, 0.3  # edge 0: sep_conv_3x3 is (barely) stronger
    w[1, MAX] = 0.3
    w[2, SKIP], w[3, SKIP], w[4, SKIP] = 0.3, 0.3 + 1e-12, 0.3 + 2e-12  # node 1: inputs 1, 2
    gene = derive_cell(w, [DARTS_OPS] * 14, 4)
    assert node_sets(gene)[0] == [("max_pool_3x3", 1), ("sep_conv_3x3", 0)]
    assert node_sets(gene)[1] == [("skip_connect", 1), ("skip_connect", 2)]


def test_nb201_rule_argmax_including_none():
    """NB201: per edge the argmax op, `none` included; ties go to the first op."""
    w = torch.full((6, 5), 0.1)
    picks = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "none"]
    for e, op in enumerate(picks):
        w[e, NB201_OPS.index(op)] = 0.5
    w[5, NB201_OPS.index("nor_conv_3x3")] = 0.5  # tie with `none` on edge 5
    g = NB201SuperNet(C=4, N=1).genotype({"cell": w})
    assert g == NB201Genotype(tuple(picks))
    # space.derive_none = false: the best op other than `none` (DARTS' rule on its space).
    strict = NB201SuperNet(C=4, N=1, derive_none=False).genotype({"cell": w})
    assert strict.ops[1:5] == g.ops[1:5] and strict.ops[0] == "skip_connect"
    assert strict.ops[5] == "nor_conv_3x3"


def test_s1_genotype_uses_per_edge_op_names(space_cfg):
    """In S1 column o of edge e means that edge's own o-th candidate, per cell type."""
    model = SPACES.get("s1")(space_cfg("s1"), 3, 10)
    # Column 1 wins everywhere; later edges are stronger, so each node keeps its last 2 inputs.
    w = torch.stack([torch.tensor([0.1, 0.2 + 0.01 * e]) for e in range(14)])
    g = model.genotype({"normal": w, "reduce": w})
    assert node_sets(g.normal) == node_sets([
        ("dil_conv_3x3", 0), ("dil_conv_5x5", 1),
        ("sep_conv_3x3", 1), ("dil_conv_3x3", 2),
        ("sep_conv_3x3", 2), ("dil_conv_3x3", 3),
        ("dil_conv_5x5", 3), ("dil_conv_5x5", 4),
    ])
    red = ROBUST_DARTS_OP_SETS["s1"]["reduce"]
    kept = [0, 1, 3, 4, 7, 8, 12, 13]
    assert node_sets(g.reduce) == node_sets([(red[e][1], edge_list(4)[e][0]) for e in kept])
    validate_darts(g, steps=4)


def test_s3_genotype_never_selects_none(space_cfg):
    """S3 (none, skip, sep3): `none` is ignored even when it dominates every edge."""
    model = SPACES.get("s3")(space_cfg("s3"), 3, 10)
    w = torch.tensor([[0.9, 0.04, 0.06]] * 14)
    g = model.genotype({"normal": w, "reduce": w})
    assert {op for op, _ in g.normal + g.reduce} == {"sep_conv_3x3"}
