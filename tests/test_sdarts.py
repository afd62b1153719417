"""SDARTS perturbations (search.perturb) and the beta-DARTS regulariser (search.regularizer)."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_NB201_SEARCH, log_records, search_and_resumed_search

from diffnas.arch import ArchParameters
from diffnas.cli import main
from diffnas.runs.config import SearchConfig, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import run_search
from diffnas.search.perturbations import PERTURBATIONS, project
from diffnas.search.regularizers import REGULARIZERS

pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.softmax(torch.randn(6, 5, generator=g), -1)
    w[1] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])  # an edge projected by DARTS-PT
    w[2, 0] = 0.0  # a pruned op
    return {"cell": w}


def test_project_clips_renormalises_and_keeps_zeros():
    w = torch.tensor([[0.5, -0.2, 0.9, 0.0], [-0.1, -0.3, -0.2, -0.4]])
    live = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    p = project(w, live)
    assert torch.allclose(p.sum(-1), torch.ones(2))
    assert p[0].tolist() == pytest.approx([0.5 / 1.4, 0.0, 0.9 / 1.4, 0.0])
    assert p[1].tolist() == [1.0, 0.0, 0.0, 0.0]  # all clipped: the largest entry comes back


def test_random_perturbation_keeps_zero_weights_and_repeats_from_its_state():
    cfg = SearchConfig(perturb="random", perturb_epsilon=0.3, perturb_epsilon_start=0.1)
    rs = PERTURBATIONS.get("random")(cfg, seed=7)
    w = _weights()
    state = rs.state_dict()
    a = rs(w, None, progress=0.5)["cell"]
    assert bool((a[w["cell"] == 0] == 0).all()) and torch.equal(a[1], w["cell"][1])
    assert torch.allclose(a.sum(-1), torch.ones(6)) and not torch.equal(a, w["cell"])
    assert rs.epsilon(0.5) == pytest.approx(0.2)
    again = PERTURBATIONS.get("random")(cfg, seed=123)
    again.load_state_dict(state)
    assert torch.equal(again(w, None, progress=0.5)["cell"], a)
    assert not torch.equal(rs(w, None, progress=0.5)["cell"], a)  # the stream moves on


def test_adversarial_perturbation_raises_the_loss_within_the_ball():
    cfg = SearchConfig(perturb="adversarial", perturb_epsilon=0.2, perturb_steps=5)
    adv = PERTURBATIONS.get("adversarial")(cfg, seed=0)
    w = _weights()
    c = torch.linspace(-1, 1, 30).reshape(6, 5)

    def loss_fn(weights):
        return (weights["cell"] * c).sum()

    out = adv(w, loss_fn, progress=1.0)["cell"]
    assert float(loss_fn({"cell": out})) > float(loss_fn(w))
    assert bool((out[w["cell"] == 0] == 0).all()) and torch.equal(out[1], w["cell"][1])
    assert torch.allclose(out.sum(-1), torch.ones(6))
    # A perturbation that cannot raise the loss is dropped: the weights come back unchanged.
    flat = adv(w, lambda ws: (ws["cell"] * 0).sum() - 1e-9 * ws["cell"].sum(), progress=1.0)
    assert torch.equal(flat["cell"], w["cell"])


def test_beta_regulariser_is_the_mean_logsumexp_and_decays_alphas_by_softmax():
    arch = ArchParameters(
        {"normal": (14, 8), "reduce": (14, 8)},
        init_std=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    arch.mask_normal[0, 3] = 0.0
    reg = REGULARIZERS.get("beta")(SearchConfig(beta_lambda=50.0), None, arch)
    p = reg.penalty(0.4)
    a = arch.alphas()
    n = a["normal"].detach().clone()
    n[0, 3] = float("-inf")
    direct = torch.logsumexp(n, -1).mean() + torch.logsumexp(a["reduce"].detach(), -1).mean()
    assert p.item() == pytest.approx(0.4 * 50 * direct.item())
    p.backward()
    expected = 0.4 * 50 * torch.softmax(n, -1) / 14
    assert torch.allclose(arch.alphas_normal.grad, expected, atol=1e-7)
    assert arch.alphas_normal.grad[0, 3] == 0.0
    assert reg.penalty(0.0) == 0.0


TINY = TINY_NB201_SEARCH


@pytest.mark.parametrize(
    "extra",
    [
        ["search.perturb=random"],
        ["search.perturb=adversarial", "search.perturb_steps=2"],
        ["search.regularizer=beta"],
    ],
    ids=["sdarts-rs", "sdarts-adv", "beta-darts"],
)
def test_search_resumes_exactly(tmp_path, extra):
    """Stopped after an epoch and resumed, the search draws the same noise and ends equal."""
    done, resumed = search_and_resumed_search(tmp_path, [*TINY, *extra])
    assert resumed == done
    a, b = (RunDir(tmp_path / d).load_checkpoint()["strategy"] for d in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert log_records(tmp_path / "a" / "metrics.jsonl") == log_records(
        tmp_path / "b" / "metrics.jsonl"
    )


def test_perturbation_changes_the_training_and_pt_selects_on_an_sdarts_supernet(tmp_path):
    plain = load_config(None, [*TINY, f"run.out={tmp_path / 'p'}"])
    run_search(plain, RunDir(tmp_path / "p").create(plain), log=lambda s: None)
    out = tmp_path / "rs"
    args = [
        "search",
        "--out",
        str(out),
        *[a for s in [*TINY, "search.perturb=random"] for a in ("--set", s)],
    ]
    assert main(args) == 0
    a, b = (RunDir(d).load_checkpoint()["strategy"]["model"] for d in (tmp_path / "p", out))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the noise reached the weight steps
    sel = [
        "select",
        str(out),
        "--method",
        "perturbation",
        "--set",
        "select.proj_intv=1",
        "--set",
        "select.criterion=loss",
    ]
    assert main(sel) == 0
    assert (out / "select-perturbation" / "genotype.json").is_file()


def test_random_noise_is_uniform_in_the_configured_ball():
    cfg = SearchConfig(perturb="random", perturb_epsilon=0.2, perturb_epsilon_start=0.2)
    rs = PERTURBATIONS.get("random")(cfg, seed=0)
    noise = rs._noise(torch.zeros(200, 500), rs.epsilon(0.0))
    assert float(noise.abs().max()) <= 0.2 and float(noise.abs().max()) > 0.199
    assert abs(float(noise.mean())) < 2e-3
    assert float(noise.var()) == pytest.approx(0.2**2 / 3, rel=0.02)
