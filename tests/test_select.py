"""Selection as its own stage: DARTS-PT's removals, decisions, schedule and exact resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffnas.arch import ArchParameters
from diffnas.runs.config import SelectConfig, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import run_search
from diffnas.select import open_select_dir, run_select
from diffnas.select import run as select_run
from diffnas.select.perturbation import Perturbation, batch_statistics, space_layout
from diffnas.select.projection import without
from diffnas.select.schedule import NODE, OP, pt_schedule
from diffnas.spaces import mixed
from diffnas.spaces.darts_cnn import DartsSuperNet
from diffnas.spaces.nb201 import NB201SuperNet

TINY = [
    "run.seed=3",
    "run.threads=1",
    "run.progress=false",
    "run.log_every=2",
    'data.dataset="synthetic"',
    "data.limit=64",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "space.C=4",
    "space.N=1",
    "space.layers=3",
    "search.epochs=2",
]


def _search(out: Path, space: str, extra=()) -> Path:
    cfg = load_config(None, [*TINY, f'space.name="{space}"', *extra, f"run.out={out}"])
    run_search(cfg, RunDir(out).create(cfg), log=lambda s: None)
    return out


def _records(path: Path) -> list[dict]:
    """A jsonl log without its wall-clock fields."""
    drop = ("time", "time_s", "epoch_time_s")
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in drop} for r in recs]


def _strip_times(rec):
    if isinstance(rec, dict):
        return {k: _strip_times(v) for k, v in rec.items() if k not in ("time", "time_s")}
    if isinstance(rec, list):
        return [_strip_times(v) for v in rec]
    return rec


# ---------------------------------------------------------------------------------------------
# Removing an op
# ---------------------------------------------------------------------------------------------


def _mixed_ops_of_edge(model, kind: str, edge: int) -> list[mixed.MixedOp]:
    if isinstance(model, NB201SuperNet):
        return [c.edges[edge] for c in model.cells if hasattr(c, "edges")]
    return [c.ops[edge] for c in model.cells if c.reduction == (kind == "reduce")]


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_zeroing_an_op_weight_equals_removing_the_op_from_the_sum(float64, space):
    """The supernet with one op's weight set to 0 (nothing renormalised) computes exactly the
    reference sum over the edge's other ops with their unchanged weights."""
    torch.manual_seed(0)
    if space == "nb201":
        net, kind, edge, op = NB201SuperNet(C=4, N=1, num_classes=5), "cell", 3, 2
    else:
        net, kind, edge, op = DartsSuperNet(C=4, layers=3, num_classes=5), "reduce", 5, 4
    net = net.double()
    weights = {k: torch.softmax(torch.randn(s), -1) for k, s in net.arch_shapes().items()}
    x = torch.randn(4, 3, 10, 10)
    removed = net(x, without(weights, kind, edge, op))
    targets = set(map(id, _mixed_ops_of_edge(net, kind, edge)))

    def reference(self, x, w, active, cache=None):
        skip = op if id(self) in targets else -1
        return sum(w[i] * o(x) for i, o in enumerate(self.ops) if i != skip)

    fast = mixed.MixedOp.forward
    mixed.MixedOp.forward = reference
    try:
        expected = net(x, weights)
    finally:
        mixed.MixedOp.forward = fast
    torch.testing.assert_close(removed, expected)
    # ... and that removal really changed the output.
    assert not torch.allclose(removed, net(x, weights))


def test_without_copies_only_the_changed_tensor():
    w = {"normal": torch.rand(14, 8), "reduce": torch.rand(14, 8)}
    out = without(w, "normal", 3, 1)
    assert out["reduce"] is w["reduce"] and out["normal"][3, 1] == 0 and w["normal"][3, 1] != 0
    assert torch.count_nonzero(without(w, "normal", 3)["normal"][3]) == 0
    assert torch.equal(out["normal"].sum() + w["normal"][3, 1], w["normal"].sum())


# ---------------------------------------------------------------------------------------------
# Decisions on hand-set supernets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("criterion", ["acc", "loss"])
def test_perturbation_keeps_the_only_useful_op_where_magnitude_does_not(criterion):
    """NB201 with the clipped activation (weights 0 allowed, no `none`): every edge but 0->3 is
    cut, so the cells compute only that edge. On it, skip and pool have weight 0, nor_conv_1x1
    the largest weight but all-zero convolutions (it outputs 0), nor_conv_3x3 a smaller weight.
    Labels are the supernet's own predictions. Only the 3x3 conv matters: PT keeps it, the
    magnitude rule takes the 1x1."""
    torch.manual_seed(0)
    net = NB201SuperNet(
        C=4,
        N=1,
        num_classes=6,
        op_names=("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"),
    )
    arch = ArchParameters(net.arch_shapes(), "clip", 0.0, torch.Generator().manual_seed(0))
    edge = 3  # 0 -> 3
    with torch.no_grad():
        arch.alphas_cell.copy_(torch.tensor([0.0, 0.9, 0.3, 0.0]).expand(6, 4))
        for op in _mixed_ops_of_edge(net, "cell", edge):
            for m in op.ops[1].modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.weight.zero_()
    xs = [torch.randn(16, 3, 8, 8) + 3 * torch.randn(16, 3, 1, 1) for _ in range(2)]
    pt = Perturbation(net, arch, [], SelectConfig(criterion=criterion), seed=0)
    for e in range(6):
        if e != edge:
            pt.projection.cut_edge("cell", e)
    with batch_statistics(net), torch.no_grad():
        # Centre the logits over the data (the untrained net otherwise predicts one class).
        net.classifier.bias -= torch.cat([net(x, arch.weights()) for x in xs]).mean(0)
        pt.batches = [(x, net(x, arch.weights()).argmax(-1)) for x in xs]
    labels = torch.cat([y for _, y in pt.batches])
    assert len(labels.unique()) > 1, "precondition: the labels must not be one class"
    assert net.genotype(arch.weights()).ops[edge] == "nor_conv_1x1"

    record = pt.decide_op("cell", edge)
    assert record["chosen"] == "nor_conv_3x3"
    scores = {c["op"]: c["acc"] for c in record["candidates"]}
    assert scores["skip_connect"] == scores["nor_conv_1x1"] == scores["avg_pool_3x3"] == 100.0
    assert scores["nor_conv_3x3"] < 100.0
    assert net.genotype(arch.weights()).ops[edge] == "nor_conv_3x3"  # the projection is applied
    assert torch.equal(arch.weights()["cell"][edge], torch.tensor([0.0, 0.0, 1.0, 0.0]))


def test_node_decision_drops_the_input_whose_removal_hurts_least():
    """DARTS space, node 5 (inputs c_{k-2}, c_{k-1}, 0, 1, 2): only the edges from c_{k-1} and
    node 1 carry signal (every other edge into any node is cut); PT keeps exactly those two."""
    torch.manual_seed(0)
    net = DartsSuperNet(C=4, layers=3, num_classes=6)
    arch = ArchParameters(net.arch_shapes(), "softmax", 0.0, torch.Generator().manual_seed(0))
    pt = Perturbation(net, arch, [], SelectConfig(), seed=0)
    layout = pt.layout
    node = 5
    useful = {1, 3}  # inputs: c_{k-1} and node 1 (state index 3)
    for kind in ("normal", "reduce"):
        for e, (src, to) in enumerate(layout.edges[kind]):
            # Node 3 (state 3) keeps its edge from c_{k-1} so that it carries signal.
            keep = (to == node and src in useful) or (to == 3 and src == 1)
            if keep:
                pt.projection.fix_op(kind, e, net.edge_ops[kind][e].index("sep_conv_3x3"))
            elif to == node:
                pt.projection.fix_op(kind, e, net.edge_ops[kind][e].index("none"))
            else:
                pt.projection.cut_edge(kind, e)
    x = torch.randn(24, 3, 8, 8) + 3 * torch.randn(24, 3, 1, 1)
    with batch_statistics(net), torch.no_grad():
        net.classifier.bias -= net(x, arch.weights()).mean(0)
        pt.batches = [(x, net(x, arch.weights()).argmax(-1))]
    assert len(pt.batches[0][1].unique()) > 1, "precondition: the labels must not be one class"
    record = pt.decide_node("normal", node)
    assert sorted(record["kept_from"]) == sorted(useful)
    assert len(record["rounds"]) == 3 and pt.projection.nodes["normal"] == [node]
    cut = [e for e in layout.in_edges("normal", node) if e not in record["kept"]]
    assert all(torch.count_nonzero(arch.weights()["normal"][e]) == 0 for e in cut)


# ---------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------


def test_schedule_has_the_papers_length():
    darts = space_layout(DartsSuperNet(C=4, layers=3))
    assert (darts.op_steps, darts.node_steps) == (14, 3)
    s = pt_schedule(darts.op_steps, darts.node_steps, 5)
    assert s.tune_epochs == 5 * (14 + 3 - 1) + 1 == 81
    assert [e for e, k in s.decisions if k == OP] == list(range(0, 70, 5))
    assert [e for e, k in s.decisions if k == NODE] == [70, 75, 80]
    nb201 = space_layout(NB201SuperNet(C=4, N=1))
    assert (nb201.op_steps, nb201.node_steps) == (6, 0)
    s = pt_schedule(nb201.op_steps, nb201.node_steps, 5)
    assert s.tune_epochs == 25 and [e for e, _ in s.decisions] == [0, 5, 10, 15, 20, 24]
    for intv in (1, 2, 3):  # never two decisions in one epoch
        epochs = [e for e, _ in pt_schedule(6, 0, intv).decisions]
        assert len(set(epochs)) == 6 and max(epochs) < pt_schedule(6, 0, intv).tune_epochs


# ---------------------------------------------------------------------------------------------
# The stage end to end
# ---------------------------------------------------------------------------------------------


def test_darts_space_selection_end_to_end(tmp_path):
    """A DARTS-space cell with 3 nodes (9 edges; nodes with 3 and 4 inputs): 9 op steps and 2
    node steps, both cell types each, proj_intv * (9 + 2 - 1) + 1 tuning epochs, a complete
    projection, 2 inputs per node, and every candidate's accuracy and loss in the log."""
    search = _search(tmp_path / "s", "darts", ["space.steps=3", "space.multiplier=3"])
    cfg, run = open_select_dir(search, "perturbation", ["select.proj_intv=1"])
    genotype = run_select(cfg, search, run, log=lambda s: None)
    decisions = run.read_decisions()
    assert sum(r["decision"] == "op" for r in decisions) == 2 * 9
    assert sum(r["decision"] == "node" for r in decisions) == 2 * 2
    for r in decisions:
        if r["decision"] == "op":
            assert len(r["candidates"]) == 8 and r["chosen"] in [c["op"] for c in r["candidates"]]
            assert all({"acc", "loss"} <= set(c) for c in r["candidates"])
    for cell in (genotype.normal, genotype.reduce):
        assert len(cell) == 6  # 3 nodes x 2 inputs
    epochs = [r for r in run.read_metrics() if r["kind"] == "epoch"]
    assert len(epochs) == 1 * (9 + 2 - 1) + 1
    assert epochs[-1]["decided_edges"] == 2 * 9
    result = json.loads((run.path / "result.json").read_text())
    assert result["decisions"] == 22 and result["genotype"] == str(genotype)
    # The search run directory is untouched apart from the new select-* folder.
    assert sorted(p.name for p in search.iterdir() if p.name.startswith("select")) == [
        "select-perturbation"
    ]


def test_magnitude_selection_is_the_search_genotype(tmp_path):
    search = _search(tmp_path / "s", "nb201")
    cfg, run = open_select_dir(search, "magnitude")
    genotype = run_select(cfg, search, run, log=lambda s: None)
    assert json.loads((search / "genotype.json").read_text()) == json.loads(
        (run.path / "genotype.json").read_text()
    )
    assert str(genotype) == json.loads((run.path / "result.json").read_text())["genotype"]


@pytest.mark.parametrize("fix_alpha", [False, True])
def test_selection_resume_equals_uninterrupted(tmp_path, monkeypatch, fix_alpha):
    """Stopped after a tuning epoch, and killed between a decision and its tuning: resumed, the
    decisions, logs, genotype, alphas and weights equal those of an uninterrupted selection."""
    extra = ["search.fix_alpha=true"] if fix_alpha else []
    search = _search(tmp_path / "s", "nb201", extra)
    sets = ["select.proj_intv=2"]
    cfg, ref = open_select_dir(search, "perturbation", sets, out=tmp_path / "ref")
    g_ref = run_select(cfg, search, ref, log=lambda s: None)

    cfg, run = open_select_dir(search, "perturbation", sets, out=tmp_path / "b")
    assert run_select(cfg, search, run, log=lambda s: None, stop_after=3) is None
    # Next: die right after the decision that opens epoch 4 (checkpoint saved, no tuning yet).
    real_train_epoch = select_run.train_epoch

    def dying(s, cfg, run, epoch, *a, **kw):
        if epoch == 4:
            raise KeyboardInterrupt
        return real_train_epoch(s, cfg, run, epoch, *a, **kw)

    monkeypatch.setattr(select_run, "train_epoch", dying)
    cfg, run = open_select_dir(search, "perturbation", out=tmp_path / "b", resume=True)
    with pytest.raises(KeyboardInterrupt):
        run_select(cfg, search, run, resume=True, log=lambda s: None)
    assert run.load_checkpoint()["decided"] is True
    monkeypatch.setattr(select_run, "train_epoch", real_train_epoch)
    cfg, run = open_select_dir(search, "perturbation", out=tmp_path / "b", resume=True)
    g = run_select(cfg, search, run, resume=True, log=lambda s: None)

    assert str(g) == str(g_ref)
    assert _strip_times(_records(run.path / "decisions.jsonl")) == _strip_times(
        _records(ref.path / "decisions.jsonl")
    )
    for name in ("metrics.jsonl", "genotypes.jsonl"):
        assert _records(run.path / name) == _records(ref.path / name), name
    a, b = ref.load_checkpoint()["strategy"], run.load_checkpoint()["strategy"]
    for part in ("arch", "model"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

ENV_PATH = str(Path(__file__).parents[1] / "src")


def _cli(*args) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": ENV_PATH}
    return subprocess.run(
        [sys.executable, "-m", "diffnas", "select", *args], env=env, capture_output=True, text=True
    )


def test_select_cli_errors(tmp_path):
    """Missing or unfinished searches, a wrong key, a second run in the same place: one clear
    line each, nothing written to the search's directory."""
    r = _cli(str(tmp_path / "nope"))
    assert r.returncode == 2 and "no such search run directory" in r.stderr
    search = _search(tmp_path / "s", "nb201")
    r = _cli(str(search), "--set", "search.epochs=3")
    assert r.returncode == 2 and "select.*" in r.stderr and "Traceback" not in r.stderr
    r = _cli(str(search), "--method", "bogus")
    assert r.returncode == 2 and "bogus" in r.stderr and "perturbation" in r.stderr
    assert not (search / "select-bogus").exists()
    r = _cli(str(search), "--method", "magnitude")
    assert r.returncode == 0, r.stderr
    r = _cli(str(search), "--method", "magnitude")
    assert r.returncode == 2 and "--resume" in r.stderr
    # An unfinished search cannot be selected from.
    state = torch.load(search / "checkpoint.pt", weights_only=True)
    state["epoch"] = 1
    torch.save(state, search / "checkpoint.pt")
    r = _cli(str(search), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "not finished" in r.stderr and not (tmp_path / "x").exists()
