"""The DARTS architecture step (exact hypergradient, no side effects) and DartsSearch resume."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from diffnas.arch import ArchParameters
from diffnas.search import STRATEGIES, DartsSearch
from diffnas.search.architect import Architect
from diffnas.search.darts import cosine_lr
from diffnas.spaces.darts_cnn import DartsSuperNet
from diffnas.spaces.genotypes import DARTS_OPS, validate_darts

XI, MOMENTUM, WD = 0.1, 0.9, 3e-4


def tiny_search_setup(make_batch, order=2, eps_scale=1e-7, a_lr=3e-4):
    """A tiny DARTS supernet (full op set, no noise) with one real SGD step already taken."""
    torch.manual_seed(0)
    model = DartsSuperNet(C=4, layers=3, num_classes=3).train()
    arch = ArchParameters(model.arch_shapes(), init_std=1.0)
    w_opt = torch.optim.SGD(model.parameters(), lr=XI, momentum=MOMENTUM, weight_decay=WD)
    a_opt = torch.optim.SGD(arch.parameters(), lr=a_lr)
    x, y = make_batch(seed=3)
    F.cross_entropy(model(x, {k: w.detach() for k, w in arch.weights().items()}), y).backward()
    w_opt.step()  # leaves a momentum buffer on every weight
    w_opt.zero_grad(set_to_none=True)
    architect = Architect(model, arch, a_opt, w_opt, F.cross_entropy, order, eps_scale)
    return model, arch, w_opt, architect


def exact_hypergradient(model, arch, w_opt, train_batch, val_batch, xi):
    """d/dalpha L_val(w'(alpha), alpha), w' = w - xi (g_train + wd w + momentum buf), by autograd.

    Returns (exact gradient, the partial dL_val/dalpha at fixed w', L_val(w')).
    """
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    group = w_opt.param_groups[0]
    alphas = list(arch.parameters())

    def loss(params, batch):
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        x, y = batch
        return F.cross_entropy(functional_call(model, {**params, **buffers}, (x, arch.weights())),
                               y)

    g_train = torch.autograd.grad(loss(named, train_batch), list(named.values()),
                                  create_graph=True, allow_unused=True, materialize_grads=True)
    unrolled = {}
    for (n, w), g in zip(named.items(), g_train, strict=True):
        d = g + group["weight_decay"] * w
        buf = w_opt.state.get(w, {}).get("momentum_buffer")
        if buf is not None:
            d = d + group["momentum"] * buf
        unrolled[n] = w - xi * d
    l_val = loss(unrolled, val_batch)
    exact = torch.autograd.grad(l_val, alphas)
    partial = torch.autograd.grad(loss({n: u.detach() for n, u in unrolled.items()}, val_batch),
                                  alphas)
    return exact, partial, l_val.detach()


def flat(ts) -> torch.Tensor:
    """All tensors of a list, flattened into one vector."""
    return torch.cat([t.reshape(-1) for t in ts])


def rel_err(a, b) -> float:
    """||a - b|| / ||b|| over the concatenation of tensor lists."""
    return ((flat(a) - flat(b)).norm() / flat(b).norm()).item()


def test_first_order_gradient_is_autograd_of_val_loss(float64, make_batch):
    """Order 1: the alpha step uses exactly dL_val(w, alpha)/dalpha at the current weights."""
    model, arch, _, architect = tiny_search_setup(make_batch, order=1, a_lr=1.0)
    train, val = make_batch(seed=1), make_batch(seed=2)
    alphas = list(arch.parameters())
    expected_loss = F.cross_entropy(model(val[0], arch.weights()), val[1])
    expected = torch.autograd.grad(expected_loss, alphas)
    before = [a.detach().clone() for a in alphas]
    loss = architect.step(train, val, xi=XI)
    got = [b - a.detach() for b, a in zip(before, alphas, strict=True)]  # plain SGD, lr 1
    torch.testing.assert_close(got, list(expected), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(loss, expected_loss.detach())
    assert all(a.grad is None for a in alphas)


def test_second_order_matches_exact_hypergradient(float64, make_batch):
    """Order 2 (finite-difference HVP, momentum buffer and wd) = double-backward autograd."""
    # eps_scale 1e-7 (float64): larger steps cross ReLU kinks, where central differences of the
    # gradient are wrong by a jump / (2 eps) (measured here: 1e-5 -> 0.3, 1e-4 -> 10 rel. error).
    model, arch, w_opt, architect = tiny_search_setup(make_batch)
    assert all("momentum_buffer" in w_opt.state[p] for p in model.parameters())
    train, val = make_batch(seed=1), make_batch(seed=2)
    loss, grads = architect.second_order_grads(train, val, XI)
    exact, partial, l_val = exact_hypergradient(model, arch, w_opt, train, val, XI)
    err = rel_err(grads, exact)
    assert err < 1e-4, f"relative error of the second-order gradient: {err:.3e}"
    # The test is only meaningful if the second-order term is far above the tolerance.
    term = rel_err(partial, exact)
    assert term > 1e-2, f"second-order term too small to test: {term:.3e}"
    torch.testing.assert_close(loss.detach(), l_val, rtol=1e-12, atol=1e-12)


def test_second_order_leaves_model_and_optimizer_untouched(float64, make_batch):
    """second_order_grads changes no weight, BN statistic, momentum buffer, alpha or .grad."""
    model, arch, w_opt, architect = tiny_search_setup(make_batch)
    model_sd = copy.deepcopy(model.state_dict())
    arch_sd = copy.deepcopy(arch.state_dict())
    bufs = {n: w_opt.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    architect.second_order_grads(make_batch(seed=1), make_batch(seed=2), XI)
    for k, v in model.state_dict().items():
        assert torch.equal(v, model_sd[k]), k
    for k, v in arch.state_dict().items():
        assert torch.equal(v, arch_sd[k]), k
    for n, p in model.named_parameters():
        assert torch.equal(w_opt.state[p]["momentum_buffer"], bufs[n]), n
        assert p.grad is None, n
    assert all(a.grad is None for a in arch.parameters())


def test_second_order_with_masked_ops_matches_exact(float64, make_batch):
    """Masked (zero-weight) ops leave their weights unused; order 2 must still work and be exact."""
    model, arch, w_opt, architect = tiny_search_setup(make_batch)
    arch.masks()["normal"][0, DARTS_OPS.index("sep_conv_3x3")] = 0.0
    arch.masks()["reduce"][3, DARTS_OPS.index("dil_conv_5x5")] = 0.0
    train, val = make_batch(seed=1), make_batch(seed=2)
    loss, grads = architect.second_order_grads(train, val, XI)
    exact, _, _ = exact_hypergradient(model, arch, w_opt, train, val, XI)
    err = rel_err(grads, exact)
    assert err < 1e-4, f"relative error of the second-order gradient: {err:.3e}"


def test_architect_rejects_unknown_order(make_batch):
    """Only orders 1 and 2 exist."""
    model, arch, w_opt, architect = tiny_search_setup(make_batch)
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        Architect(model, arch, architect.a_optimizer, w_opt, F.cross_entropy, order=3)


# ----------------------------------------------------------------------------- DartsSearch


def make_search(search_cfg, seed, **kw) -> DartsSearch:
    """A DartsSearch on a tiny supernet whose initial weights depend on `seed`."""
    torch.manual_seed(seed)
    model = DartsSuperNet(C=4, layers=3, num_classes=3, steps=2, multiplier=2)  # 5 edges a cell
    arch = ArchParameters(model.arch_shapes())
    return STRATEGIES.get("darts")(model, arch, search_cfg(**kw))


def params_of(search: DartsSearch) -> list[torch.Tensor]:
    """Detached copies of the alphas and the weights, in a fixed order."""
    return [p.detach().clone() for p in [*search.arch.parameters(), *search.model.parameters()]]


@pytest.mark.parametrize("order", [1, 2])
def test_darts_search_steps_update_alphas_and_weights(search_cfg, make_batch, order):
    """A few steps change every alpha tensor and the weights; losses are finite; genotype valid."""
    search = make_search(search_cfg, 0, order=order)
    alphas0 = {k: a.detach().clone() for k, a in search.arch.alphas().items()}
    weights0 = [p.detach().clone() for p in search.model.parameters()]
    for s in range(3):
        out = search.step(make_batch(seed=2 * s), make_batch(seed=2 * s + 1))
        assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out
    for k, a in search.arch.alphas().items():
        assert not torch.equal(a, alphas0[k]), k
    changed = [not torch.equal(p, q) for p, q in zip(search.model.parameters(), weights0,
                                                     strict=True)]
    assert all(changed)
    validate_darts(search.genotype(), steps=2)


@pytest.mark.parametrize("order", [1, 2])
def test_darts_search_resume_is_exact(search_cfg, make_batch, order):
    """state_dict -> bytes -> load into a fresh search mid-epoch; continuing matches bitwise."""
    batches = [make_batch(seed=s) for s in range(8)]
    a = make_search(search_cfg, 0, order=order)
    a.on_epoch_start(1)  # a learning rate (and so xi) other than cfg.w_lr
    a.step(batches[0], batches[1])
    a.step(batches[2], batches[3])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make_search(search_cfg, 1, order=order)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for s in (a, b):
        s.step(batches[4], batches[5])
        s.step(batches[6], batches[7])
    for p, q in zip(params_of(a), params_of(b), strict=True):
        assert torch.equal(p, q), f"max diff {(p - q).abs().max().item():.3e}"


def test_epoch_learning_rate_is_cosine(search_cfg):
    """on_epoch_start sets lr = cosine(epoch) in every weight param group; ends at w_lr_min."""
    search = make_search(search_cfg, 0, epochs=4)
    assert search.lr == search.cfg.w_lr
    for epoch in range(5):
        search.on_epoch_start(epoch)
        want = cosine_lr(epoch, 4, search.cfg.w_lr, search.cfg.w_lr_min)
        assert search.lr == want
        assert all(g["lr"] == want for g in search.w_optimizer.param_groups)
    assert search.lr == pytest.approx(search.cfg.w_lr_min)
