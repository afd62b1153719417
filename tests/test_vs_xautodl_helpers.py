"""The xautodl comparison benchmark's assumptions that can be checked without xautodl."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from diffnas.spaces.darts_cnn import DartsSuperNet
from diffnas.spaces.genotypes import DARTS_OPS, NB201_OPS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_xautodl.py"


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (it imports xautodl only when asked to)."""
    spec = importlib.util.spec_from_file_location("vs_xautodl", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_op_of_both_spaces_has_an_xautodl_name(bench):
    assert set(DARTS_OPS) | set(NB201_OPS) <= set(bench.XAUTODL_OP)
    assert len(set(bench.XAUTODL_OP.values())) == len(bench.XAUTODL_OP)


@pytest.mark.parametrize("N", [1, 2, 3])
def test_darts_3n_cells_have_xautodl_layout(N):
    """xautodl's NASNetworkDARTS(N): N normal, reduce, N-1 normal, reduce, N-1 normal."""
    theirs = [False] * N + [True] + [False] * (N - 1) + [True] + [False] * (N - 1)
    ours = DartsSuperNet(C=2, layers=3 * N, num_classes=3)
    assert [c.reduction for c in ours.cells] == theirs


def test_conv_bias_is_cancelled_by_batch_stat_bn(float64):
    """Why xautodl's conv biases (bias=not affine) may be zeroed: train-mode BN removes them."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=True)
    nn.init.normal_(conv.bias)
    bn = nn.BatchNorm2d(4, affine=False)
    x = torch.randn(5, 3, 6, 6)
    with_bias = bn(conv(x))
    with torch.no_grad():
        conv.bias.zero_()
    bn_zero = nn.BatchNorm2d(4, affine=False)
    torch.testing.assert_close(bn_zero(conv(x)), with_bias, rtol=0, atol=1e-12)


def test_rel_is_relative_to_the_reference(bench):
    b = torch.tensor([1.0, -4.0, 2.0])
    assert bench.rel(b.clone(), b) == 0.0
    assert bench.rel(b + torch.tensor([0.0, 0.0, 0.4]), b) == pytest.approx(0.1)


def test_missing_xautodl_says_how_to_install(bench, monkeypatch):
    for name in [n for n in sys.modules if n == "xautodl" or n.startswith("xautodl.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "xautodl", None)
    with pytest.raises(SystemExit, match=r"pip install --no-deps xautodl==1\.0\.0"):
        bench.import_xautodl()
