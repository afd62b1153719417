"""DARTS-PRIME's components: clipped activation with permanent pruning, alpha-step schedules,
proximity and ADMM regularisers, and exact resume with all their state."""

from __future__ import annotations

import json
import math

import pytest
import torch

from diffnas.arch import ArchParameters
from diffnas.runs.config import SearchConfig, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import run_search, train_portion
from diffnas.search.regularizers import AdmmRegularizer, ProximityRegularizer
from diffnas.search.schedules import ALPHA_SCHEDULES
from diffnas.spaces import build_supernet


def _clip_net(space_cfg, name="darts", **kw):
    torch.manual_seed(0)
    model = build_supernet(space_cfg(name, node_bn=True, **kw), 3, 10, drop_none=True)
    arch = ArchParameters(model.arch_shapes(), "clip", 1e-4, torch.Generator().manual_seed(0))
    return model, arch


def test_clip_weights_start_at_one_over_ops_without_none(space_cfg):
    model, arch = _clip_net(space_cfg)
    assert all("none" not in ops for ops in model.edge_ops["normal"])
    w = arch.weights()["normal"]
    assert w.shape == (14, 7)
    assert torch.allclose(w, torch.full_like(w, 1 / 7), atol=1e-3)
    with torch.no_grad():
        arch.alphas_normal[0, 0] = 1.7
        arch.alphas_normal[0, 1] = -0.3
    w = arch.weights()["normal"]
    assert w[0, 0] == 1.0 and w[0, 1] == 0.0  # clipped to [0, 1], no normalisation


def test_pruning_is_permanent_and_pruned_ops_do_not_run(space_cfg, make_batch):
    model, arch = _clip_net(space_cfg, "nb201")
    with torch.no_grad():
        arch.alphas_cell[0, :] = -0.1  # every op of edge 0
        arch.alphas_cell[1, 2] = 0.0
    alive = arch.prune()
    assert alive == 6 * 4 - 5
    assert arch.mask_cell[0].sum() == 0 and arch.mask_cell[1, 2] == 0
    with torch.no_grad():
        arch.alphas_cell[0, :] = 0.9  # an alpha that comes back does not revive the op
    assert torch.all(arch.weights()["cell"][0] == 0)
    assert arch.prune() == alive
    # Pruned ops get no gradient: they were not run.
    x, y = make_batch(4, 3, 8, 8, num_classes=10)
    torch.nn.functional.cross_entropy(model(x, arch.weights()), y).backward()
    cell = model.cells[0]
    for name, module in [("edge0", cell.edges[0]), ("edge1op2", cell.edges[1].ops[2])]:
        assert all(p.grad is None for p in module.parameters()), name
    assert any(p.grad is not None for p in cell.edges[1].ops[1].parameters())
    # A fully pruned NB201 edge reads as `none` in the genotype.
    assert model.genotype(arch.weights()).ops[0] == "none"


def test_node_bn_normalises_each_node(space_cfg):
    model, _ = _clip_net(space_cfg, "nb201")
    bns = [m for m in model.cells[0].node_bns]
    assert len(bns) == 3 and all(isinstance(b, torch.nn.BatchNorm2d) for b in bns)
    assert not bns[0].affine


def _schedule(name, **kw):
    return ALPHA_SCHEDULES.get(name)(SearchConfig(alpha_schedule=name, **kw))


def test_static_schedule_steps_every_f():
    s = _schedule("static", alpha_every=4)
    taken = [s.take_alpha_step() for _ in range(12)]
    assert taken == [True, False, False, False] * 3
    assert s.alpha_steps == 3


@pytest.mark.parametrize("f", [2, 5, 10])
def test_fisher_schedule_fraction_with_constant_gradient_norm(f):
    s = _schedule("fisher", alpha_every=f)
    assert s.take_alpha_step() is False  # F = 0: nothing observed yet
    n = 5000
    for _ in range(n):
        s.observe(3.7)
        s.take_alpha_step()
    # tau is multiplied by m per iteration without a step and divided by m^f per step, so in
    # equilibrium f iterations without an alpha step come per iteration with one.
    assert s.alpha_steps / (n + 1) == pytest.approx(1 / (f + 1), abs=0.01)


def test_fisher_schedule_waits_while_gradients_are_large():
    s = _schedule("fisher", alpha_every=10)
    s.observe(1.0)  # F = 0.2 < tau0 = 1: step
    assert s.take_alpha_step()
    s.observe(1e6)
    assert not any(s.take_alpha_step() for _ in range(20))


def test_match_split_pairs_the_split_with_the_schedule():
    cfg = SearchConfig(alpha_schedule="fisher", alpha_every=10, match_split=True)
    assert train_portion(cfg, 0.5) == pytest.approx(10 / 11)
    assert train_portion(SearchConfig(match_split=True), 0.5) == 0.5


def _one_hot_clip(space_cfg, name):
    model, arch = _clip_net(space_cfg, name)
    with torch.no_grad():
        for k, a in arch.alphas().items():
            a.copy_(model.project(arch.weights())[k])
    return model, arch


@pytest.mark.parametrize("name", ["darts", "nb201"])
def test_regularisers_vanish_on_a_discrete_genotype_and_are_positive_otherwise(space_cfg, name):
    cfg = SearchConfig(reg_rho=0.1)
    model, arch = _one_hot_clip(space_cfg, name)
    prox, admm = ProximityRegularizer(cfg, model, arch), AdmmRegularizer(cfg, model, arch)
    assert prox.penalty(0.7).item() == 0.0
    assert admm.penalty(0.7).item() == 0.0
    model, arch = _clip_net(space_cfg, name)
    prox, admm = ProximityRegularizer(cfg, model, arch), AdmmRegularizer(cfg, model, arch)
    assert prox.penalty(0.0).item() == 0.0  # ramped from 0
    assert prox.penalty(0.5).item() > 0 and admm.penalty(0.0).item() > 0
    assert prox.penalty(1.0).item() == pytest.approx(2 * prox.penalty(0.5).item())


@pytest.mark.parametrize("name", ["darts", "nb201"])
def test_admm_z_is_always_a_valid_genotype(space_cfg, name):
    cfg = SearchConfig(admm_every=1, admm_gamma=0.2)
    model, arch = _clip_net(space_cfg, name)
    admm = AdmmRegularizer(cfg, model, arch)
    gen = torch.Generator().manual_seed(1)
    for _ in range(8):
        with torch.no_grad():
            for a in arch.alphas().values():
                a.add_(0.3 * torch.randn(a.shape, generator=gen))
        arch.prune()
        admm.after_alpha_step()
        for z in admm.Z.values():
            assert set(z.unique().tolist()) <= {0.0, 1.0}
            assert torch.all(z.sum(-1) <= 1)
        if name == "darts":
            for k, z in admm.Z.items():
                per_node = [int(z[e0 : e0 + i + 2].sum()) for i, e0 in enumerate([0, 2, 5, 9])]
                assert per_node == [2, 2, 2, 2], k
        g = model.genotype(admm.Z)  # parses as a genotype of the space
        assert g is not None


PRIME = [
    "run.seed=5",
    "run.threads=1",
    "run.progress=false",
    "data.dataset=synthetic",
    "data.limit=96",
    "data.batch_size=16",
    "data.eval_batch_size=48",
    "space.name=nb201",
    "space.C=4",
    "space.N=1",
    "space.node_bn=true",
    "search.epochs=3",
    "search.activation=clip",
    "search.alpha_lr=0.05",
    "search.alpha_schedule=fisher",
    "search.alpha_every=2",
    "search.fisher_tau0=1e6",  # so that the 9 iterations of this tiny run take alpha steps
    "search.regularizer=admm",
    "search.admm_every=2",
]


def _epochs(run: RunDir) -> list[dict]:
    drop = ("time", "epoch_time_s")
    return [
        {k: v for k, v in r.items() if k not in drop}
        for r in run.read_metrics()
        if r["kind"] == "epoch"
    ]


@pytest.mark.parametrize("reg", ["admm", "prox"])
def test_resume_equals_uninterrupted_with_all_prime_state(tmp_path, reg):
    def make(name):
        cfg = load_config(None, [*PRIME, f"search.regularizer={reg}", f"run.out={tmp_path / name}"])
        return cfg, RunDir(cfg.run.out).create(cfg)

    cfg, full = make("full")
    g_full = run_search(cfg, full, log=lambda s: None)
    cfg, part = make("part")
    run_search(cfg, part, log=lambda s: None, stop_after=1)
    g_part = run_search(cfg, part, resume=True, log=lambda s: None)
    assert str(g_full) == str(g_part)
    assert _epochs(full) == _epochs(part)
    a = full.load_checkpoint()["strategy"]
    b = part.load_checkpoint()["strategy"]
    assert json.dumps(a["schedule"]) == json.dumps(b["schedule"])
    for k in a["arch"]:
        assert torch.equal(a["arch"][k], b["arch"][k])
    record = _epochs(full)[-1]
    assert set(record["active_ops"]) == {"cell"} and record["active_ops"]["cell"] <= 24
    assert 0 < record["alpha_steps"] < 9  # 3 epochs of 3 iterations, not every one
    assert math.isfinite(record["regularizer"]) and record["discrete_distance"] >= 0
