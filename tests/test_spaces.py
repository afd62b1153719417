"""Supernets and the mixed edge: fast path = definition, zero weights cost nothing, shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import conv_counter, n_convs
from torch import nn

from diffnas.arch import ArchParameters
from diffnas.spaces import SPACES, build_supernet
from diffnas.spaces.darts_cnn import DartsSuperNet
from diffnas.spaces.genotypes import DARTS_OPS, NB201_OPS, validate_darts
from diffnas.spaces.mixed import MixedOp, active_mask
from diffnas.spaces.nb201 import NB201SuperNet

ALL_SPACES = ("nb201", "darts", "s1", "s2", "s3", "s4")


def weight_pattern(kind: str, n_ops: int, gen: torch.Generator) -> torch.Tensor:
    """Edge weights of one MixedOp: random, with exact zeros, or with `none` (index 0) dominant."""
    w = torch.softmax(torch.randn(n_ops, generator=gen), -1)
    if kind == "zeros":
        w[[2, 4]] = 0.0
    elif kind == "none_largest":
        w = w * 0.1
        w[0] = 0.9
    return w


# ----------------------------------------------------------------------------- MixedOp


@pytest.mark.parametrize("ops,pool_bn", [(DARTS_OPS, True), (NB201_OPS, False)],
                         ids=["darts_ops", "nb201_ops"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["random", "zeros", "none_largest"])
def test_mixed_op_fast_path_equals_reference(float64, ops, pool_bn, stride, kind):
    """Fast forward = sum_o w_o o(x); d/dx and d/dw (non-zero w) equal the definition's."""
    gen = torch.Generator().manual_seed(stride)
    torch.manual_seed(0)
    op = MixedOp(4, 4, stride, ops, pool_bn=pool_bn)
    x = torch.randn(3, 4, 9, 7, generator=gen).requires_grad_(True)
    w = weight_pattern(kind, len(ops), gen).requires_grad_(True)
    fast = op(x, w, active_mask(w.detach()))
    ref = op.reference_forward(x, w)
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)

    g_out = torch.randn(ref.shape, generator=gen)
    gx_fast, gw_fast = torch.autograd.grad((fast * g_out).sum(), (x, w))
    gx_ref, gw_ref = torch.autograd.grad((ref * g_out).sum(), (x, w))
    torch.testing.assert_close(gx_fast, gx_ref, rtol=1e-10, atol=1e-12)
    nz = w.detach() != 0
    torch.testing.assert_close(gw_fast[nz], gw_ref[nz], rtol=1e-10, atol=1e-12)
    # Documented: zero-weight ops are not run and so receive no gradient.
    assert torch.all(gw_fast[~nz] == 0)


def test_mixed_op_cut_edge_returns_none():
    """All weights zero, or only `none` non-zero, gives None (the definition gives zeros)."""
    op = MixedOp(4, 4, 1, DARTS_OPS)
    x = torch.randn(2, 4, 6, 6)
    zeros = torch.zeros(len(DARTS_OPS))
    assert op(x, zeros, active_mask(zeros)) is None
    only_none = zeros.clone()
    only_none[DARTS_OPS.index("none")] = 1.0
    assert op(x, only_none, active_mask(only_none)) is None
    assert torch.count_nonzero(op.reference_forward(x, only_none)) == 0


# ----------------------------------------------------------------------------- conv counting


def expected_darts_convs(model: DartsSuperNet, weights: dict[str, torch.Tensor]) -> int:
    """Stem + preprocessing convs + the convs of every active non-`none` op."""
    total = n_convs(model.stem)
    for cell in model.cells:
        kind = "reduce" if cell.reduction else "normal"
        total += n_convs(cell.preprocess0) + n_convs(cell.preprocess1)
        for e, mixed in enumerate(cell.ops):
            for o, (name, sub) in enumerate(zip(mixed.op_names, mixed.ops, strict=True)):
                if name != "none" and weights[kind][e, o] != 0:
                    total += n_convs(sub)
    return total


def test_darts_zero_weights_run_no_convolution():
    """Conv calls = what the active ops need; zeroing one more conv op strictly lowers them."""
    torch.manual_seed(0)
    model = DartsSuperNet(C=4, layers=3, num_classes=3).eval()
    arch = ArchParameters(model.arch_shapes(), init_std=1.0)
    w = {k: v.detach().clone() for k, v in arch.weights().items()}
    sep5 = DARTS_OPS.index("sep_conv_5x5")
    w["normal"][:, sep5] = 0.0
    w["reduce"][::2, :] = 0.0  # some whole edges cut
    w["reduce"][1, DARTS_OPS.index("dil_conv_3x3")] = 0.0
    x = torch.randn(2, 3, 8, 8)

    with conv_counter(model) as calls:
        model(x, w)
    assert calls[0] == expected_darts_convs(model, w)

    full = {k: v.detach() for k, v in arch.weights().items()}
    with conv_counter(model) as calls_full:
        model(x, full)
    assert calls_full[0] == expected_darts_convs(model, full) > calls[0]

    fewer = {k: v.clone() for k, v in w.items()}
    fewer["normal"][3, DARTS_OPS.index("sep_conv_3x3")] = 0.0
    with conv_counter(model) as calls_fewer:
        model(x, fewer)
    assert calls_fewer[0] == expected_darts_convs(model, fewer) < calls[0]

    # Every op weight zero: only the stem and the cells' preprocessing run.
    off = {k: torch.zeros_like(v) for k, v in w.items()}
    with conv_counter(model) as calls_off:
        out = model(x, off)
    assert calls_off[0] == expected_darts_convs(model, off)
    assert out.shape == (2, 3)


def test_nb201_zero_weights_run_no_convolution():
    """NB201: stem (1) + 2 residual blocks (3 each) + one conv per active nor_conv op."""
    torch.manual_seed(0)
    model = NB201SuperNet(C=4, N=1, num_classes=3).eval()
    w = torch.softmax(torch.randn(6, 5), -1)
    w[:, NB201_OPS.index("nor_conv_3x3")] = 0.0
    w[2, NB201_OPS.index("nor_conv_1x1")] = 0.0
    x = torch.randn(2, 3, 8, 8)
    n_cells = 3  # N=1 cell per stage
    conv1 = NB201_OPS.index("nor_conv_1x1")
    with conv_counter(model) as calls:
        model(x, {"cell": w})
    assert calls[0] == 1 + 2 * 3 + n_cells * int((w[:, conv1] != 0).sum())
    w2 = w.clone()
    w2[0, conv1] = 0.0
    with conv_counter(model) as calls2:
        model(x, {"cell": w2})
    assert calls2[0] == calls[0] - n_cells


@pytest.mark.parametrize("name", ["darts", "nb201"])
def test_masking_an_op_changes_output_and_none_does_not(space_cfg, name):
    """Masking a conv op changes the output; masking `none` leaves it bitwise unchanged."""
    torch.manual_seed(0)
    model = SPACES.get(name)(space_cfg(name), 3, 5).eval()
    arch = ArchParameters(model.arch_shapes(), init_std=1.0)
    kind = "cell" if name == "nb201" else "normal"
    ops = NB201_OPS if name == "nb201" else DARTS_OPS
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        base = model(x, arch.weights())
        arch.masks()[kind][0, ops.index("none")] = 0.0
        assert torch.equal(model(x, arch.weights()), base)
        conv = "nor_conv_3x3" if name == "nb201" else "sep_conv_3x3"
        arch.masks()[kind][0, ops.index(conv)] = 0.0
        masked = model(x, arch.weights())
    assert not torch.allclose(masked, base)
    assert torch.equal(arch.weights()[kind][0, ops.index(conv)], torch.tensor(0.0))


# ----------------------------------------------------------------------------- shapes


def expected_shapes(name: str) -> dict[str, tuple[int, int]]:
    """The architecture weight shapes each named space must declare."""
    if name == "nb201":
        return {"cell": (6, 5)}
    k = {"darts": 8, "s1": 2, "s2": 2, "s3": 3, "s4": 2}[name]
    return {"normal": (14, k), "reduce": (14, k)}


@pytest.mark.parametrize("name", ALL_SPACES)
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32), (3, 27, 31)],
                         ids=["fmnist", "cifar", "odd"])
def test_supernet_output_shapes(space_cfg, name, in_shape):
    """Every space builds from the registry and maps (B, c, H, W) to (B, classes), any H, W."""
    torch.manual_seed(0)
    model = SPACES.get(name)(space_cfg(name, layers=5), in_shape[0], 7)
    assert model.arch_shapes() == expected_shapes(name)
    arch = ArchParameters(model.arch_shapes())
    with torch.no_grad():
        out = model(torch.randn(2, *in_shape), arch.weights())
    assert out.shape == (2, 7)  # S4's `noise` makes values random: shape (and finiteness) only
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["nb201", "darts", "s1", "s3"])
def test_supernet_gradient_reaches_every_alpha(space_cfg, name):
    """A loss on the supernet output gives a finite, non-zero gradient to every alpha tensor."""
    torch.manual_seed(0)
    model = build_supernet(space_cfg(name), 3, 4)
    arch = ArchParameters(model.arch_shapes(), init_std=1.0)
    out = model(torch.randn(2, 3, 8, 8), arch.weights())
    nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    for n, a in arch.alphas().items():
        assert a.grad is not None and torch.isfinite(a.grad).all(), n
        assert a.grad.abs().sum() > 0, n


def test_registry_lists_spaces_and_checks_steps(space_cfg):
    """SPACES names every space; RobustDARTS spaces refuse a step count other than 4."""
    assert set(ALL_SPACES) <= set(SPACES.names())
    with pytest.raises(KeyError, match="available"):
        SPACES.get("nope")
    with pytest.raises(ValueError, match="set space.steps = 4"):
        build_supernet(space_cfg("s2", steps=3), 3, 10)


def test_darts_other_steps_and_multiplier(space_cfg):
    """steps=3, multiplier=2: 9 edges per cell, concat = the last 2 nodes, valid genotype."""
    torch.manual_seed(0)
    model = build_supernet(space_cfg("darts", steps=3, multiplier=2), 3, 4)
    assert model.arch_shapes() == {"normal": (9, 8), "reduce": (9, 8)}
    arch = ArchParameters(model.arch_shapes())
    with torch.no_grad():
        assert model(torch.randn(2, 3, 9, 9), arch.weights()).shape == (2, 4)
    g = model.genotype(arch.weights())
    assert g.normal_concat == [3, 4] and g.reduce_concat == [3, 4]
    validate_darts(g, steps=3)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_avg_pool_equals_torch_avg_pool(stride, size):
    """The depthwise-conv average pool is nn.AvgPool2d(3, stride, 1, count_include_pad=False)."""
    from diffnas.ops.cnn import AvgPool3x3

    x = torch.randn(3, 5, *size, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.AvgPool2d(3, stride, 1, count_include_pad=False)(x)
    out = AvgPool3x3(stride)(x)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    (gx,) = torch.autograd.grad(out, x, g)
    torch.testing.assert_close(gx, gx_ref)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (5, 1), (3, 2), (5, 2)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_conv_shortcuts_equal_the_plain_conv(
    kernel, dilation, stride, size, channels_last
):
    """DepthwiseConv2d's CPU training shortcuts (flipped-kernel input gradient; stride-2
    dilation-2 as a stride-1 conv of the even rows and columns) give the plain conv's output,
    input gradient and weight gradient; the ops that can take a shortcut do."""
    from diffnas.ops.cnn import DepthwiseConv2d

    torch.manual_seed(0)
    pad = dilation * (kernel - 1) // 2
    conv = DepthwiseConv2d(3, kernel, stride, pad, dilation).double()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 3, *size, dtype=torch.float64).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    out = conv(x)
    ref = F.conv2d(x, conv.weight, None, stride, pad, dilation, groups=3)
    shortcut = stride == 1 or dilation == 2
    assert (type(out.grad_fn).__name__ == "_DepthwiseSameBackward") == shortcut
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, (x, conv.weight), g)
    want = torch.autograd.grad(ref, (x, conv.weight), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel,stride,dilation", [(3, 1, 1), (5, 1, 2), (3, 2, 2), (5, 2, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("frozen", [False, True])
def test_depthwise_pointwise_equals_the_two_convs(
    kernel, stride, dilation, channels_last, frozen
):
    """The fused pair (middle tensor recomputed in the backward) gives the output and the
    input and weight gradients of the plain depthwise conv followed by the 1x1 conv; with
    frozen weights (a first-order alpha step) the input gradient alone."""
    from diffnas.ops.cnn import DepthwiseConv2d, depthwise_pointwise

    torch.manual_seed(0)
    pad = dilation * (kernel - 1) // 2
    dw = DepthwiseConv2d(4, kernel, stride, pad, dilation).double()
    pw = torch.nn.Conv2d(4, 6, 1, bias=False).double()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    for p in (dw.weight, pw.weight):
        p.requires_grad_(not frozen)
    out = depthwise_pointwise(dw, pw, x)
    ref = pw(F.conv2d(x, dw.weight, None, stride, pad, dilation, groups=4))
    assert type(out.grad_fn).__name__ == "_DepthwisePointwiseBackward"
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    inputs = (x,) if frozen else (x, dw.weight, pw.weight)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, inputs, g)
    for a, b in zip(got, torch.autograd.grad(ref, inputs, g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert got[0].is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("space", ["nb201", "darts"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_supernet_equals_reference_forward_and_backward(space, channels_last):
    """The fast cell path (shared ReLU/pooling, weights folded into BN, fast depthwise backward)
    gives the reference outputs, input gradients and alpha gradients, in both memory formats."""
    from diffnas.spaces import mixed

    torch.manual_seed(0)
    if space == "nb201":
        net = NB201SuperNet(C=4, N=1, in_channels=3, num_classes=5)
    else:
        net = DartsSuperNet(C=4, layers=3, in_channels=3, num_classes=5)
    net = net.double()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    alphas = {k: torch.randn(s, dtype=torch.float64, requires_grad=True)
              for k, s in net.arch_shapes().items()}
    x = torch.randn(4, 3, 10, 10, dtype=torch.float64).contiguous(memory_format=fmt)
    x.requires_grad_(True)

    def run():
        weights = {k: torch.softmax(a, -1) for k, a in alphas.items()}
        out = net(x, weights)
        return out, torch.autograd.grad(out.square().sum(), [x, *alphas.values()])

    fast = run()
    fast_forward = mixed.MixedOp.forward
    mixed.MixedOp.forward = lambda self, x, w, active, cache=None: self.reference_forward(x, w)
    try:
        ref = run()
    finally:
        mixed.MixedOp.forward = fast_forward
    torch.testing.assert_close(fast[0], ref[0])
    for g_fast, g_ref in zip(fast[1], ref[1], strict=True):
        torch.testing.assert_close(g_fast, g_ref)
