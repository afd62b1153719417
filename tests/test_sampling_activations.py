"""GDAS (search.activation = gumbel) and DrNAS (search.activation = dirichlet): edge weights
drawn for every search step from seeded generators, deterministic weights elsewhere."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_NB201_SEARCH, log_records, search_and_resumed_search

from diffnas.arch import ArchParameters
from diffnas.arch.params import dirichlet_mean, dirichlet_sample, gumbel_hard
from diffnas.runs.config import ConfigError, SearchConfig, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import run_search

pytestmark = pytest.mark.usefixtures("one_thread")
CFG = SearchConfig(gumbel_tau_max=10.0, gumbel_tau_min=0.1)


def test_gumbel_sample_is_one_hot_with_the_soft_samples_gradient():
    a = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w = gumbel_hard(a, torch.Generator().manual_seed(0), 0.5, CFG)
    assert ((w == 0) | (w == 1)).all() and (w.sum(-1) == 1).all()
    assert ((w == 0).sum(-1) == 4).all()  # the other ops are exactly 0: they do not run
    again = gumbel_hard(a, torch.Generator().manual_seed(0), 0.5, CFG)
    assert torch.equal(w, again)
    # Straight-through: the gradient is that of the soft Gumbel-softmax sample.
    c = torch.randn(6, 5, dtype=torch.float64)
    (w * c).sum().backward()
    g = torch.Generator().manual_seed(0)
    u = torch.rand(a.shape, generator=g, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    tau = 10.0 - (10.0 - 0.1) * 0.5
    b = a.detach().clone().requires_grad_()
    soft = torch.softmax((torch.log_softmax(b, -1) - torch.log(-torch.log(u))) / tau, -1)
    (soft * c).sum().backward()
    assert torch.allclose(a.grad, b.grad)
    assert torch.equal(w.argmax(-1), soft.argmax(-1))


def test_dirichlet_samples_are_seeded_and_their_gradient_is_unbiased():
    a = torch.tensor([[0.5, -0.3, 1.2]], dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(1)
    x = dirichlet_sample(a.expand(20000, 3), g, 0.0, CFG)
    assert torch.allclose(x.sum(-1), torch.ones(20000, dtype=torch.float64))
    mean = dirichlet_mean(a)
    assert torch.allclose(x.mean(0), mean[0].detach(), atol=0.01)
    # The mean of the reparameterised gradients estimates the gradient of the mean weight.
    x[:, 0].mean().backward()
    estimated = a.grad.clone()
    a.grad = None
    dirichlet_mean(a)[0, 0].backward()
    assert torch.allclose(estimated, a.grad, atol=0.01)
    y = dirichlet_sample(a.detach(), torch.Generator().manual_seed(5), 0.0, CFG)
    assert torch.equal(y, dirichlet_sample(a.detach(), torch.Generator().manual_seed(5), 0, CFG))


@pytest.mark.parametrize("activation", ["gumbel", "dirichlet"])
def test_sampled_weights_keep_masked_ops_at_zero(activation):
    arch = ArchParameters({"cell": (6, 5)}, activation, 1e-3, torch.Generator().manual_seed(0))
    arch.mask_cell[2, 1] = 0.0
    assert arch.samples
    w = arch.sampled_weights(torch.Generator().manual_seed(0), 0.3, CFG)["cell"]
    assert w[2, 1] == 0 and w.requires_grad
    assert torch.allclose(arch.weights()["cell"][0].sum(), torch.tensor(1.0))  # deterministic


TINY = TINY_NB201_SEARCH


@pytest.mark.parametrize("activation", ["gumbel", "dirichlet"])
def test_search_resumes_exactly(tmp_path, activation):
    done, resumed = search_and_resumed_search(tmp_path, [*TINY, f"search.activation={activation}"])
    assert resumed == done
    a, b = (RunDir(tmp_path / d).load_checkpoint()["strategy"] for d in "ab")
    assert torch.equal(a["arch"]["alphas_cell"], b["arch"]["alphas_cell"])
    assert log_records(tmp_path / "a" / "metrics.jsonl") == log_records(
        tmp_path / "b" / "metrics.jsonl"
    )


def test_sampling_activations_refuse_second_order(tmp_path):
    cfg = load_config(None, [*TINY, "search.activation=gumbel", "search.order=2"])
    with pytest.raises(ConfigError, match="search.order = 1"):
        run_search(cfg, RunDir(tmp_path / "r").create(cfg), log=lambda s: None)


def test_gdas_forward_runs_exactly_the_sampled_op_of_every_edge(space_cfg):
    from helpers import conv_counter

    from diffnas.spaces import build_supernet

    torch.manual_seed(0)
    model = build_supernet(space_cfg("nb201", C=4, N=1), 3, 10)
    arch = ArchParameters(model.arch_shapes(), "gumbel", 1.0, torch.Generator().manual_seed(3))
    x = torch.randn(2, 3, 8, 8)
    for seed in range(4):
        w = arch.sampled_weights(torch.Generator().manual_seed(seed), 0.5, CFG)
        chosen = [model.op_names[i] for i in w["cell"].argmax(-1).tolist()]
        convs_per_cell = sum(op.startswith("nor_conv") for op in chosen)
        cells = sum(type(m).__name__ == "SearchCell" for m in model.modules())
        with conv_counter(model) as calls:
            model(x, w)
        # The stem and the two residual reduction blocks' convs, plus one conv per sampled
        # conv edge of each search cell: no other op of any edge runs.
        with conv_counter(model) as base:
            model(x, {"cell": torch.zeros_like(w["cell"])})
        assert calls[0] - base[0] == convs_per_cell * cells, chosen
