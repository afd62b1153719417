"""The CPU kernel problem behind the fresh-machine segfault, and its guard.

torch 2.13's oneDNN weight gradient of a channels_last stride-2 1x1 conv with 2-6 input channels
and an even input size writes past its buffer when oneDNN takes its AVX2 kernels (on AVX-512
machines `ONEDNN_MAX_CPU_ISA=AVX2` selects them). FactorizedReduce, the only such conv in the
spaces, runs as stride-1 convs of the taps it reads. These tests run a real search in a
subprocess, so a crash fails one named test instead of killing the suite."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from diffnas.ops.cnn import FactorizedReduce

# The command line of the crash: a tiny DARTS-space search, channels_last float32 (defaults).
SMALL_DARTS_SEARCH = [
    "space.name=darts",
    "space.C=4",
    "space.layers=3",
    "space.steps=1",
    "space.multiplier=1",
    "data.dataset=synthetic",
    "data.limit=16",
    "data.batch_size=8",
    "run.progress=false",
    "run.tensorboard=false",
]


@pytest.mark.parametrize("isa", ["default", "AVX2"])
@pytest.mark.parametrize("threads", [1, 2])
def test_small_darts_search_exits_cleanly(tmp_path, threads, isa):
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    if isa != "default":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    args = [sys.executable, "-m", "diffnas", "search", "--out", str(tmp_path / "run")]
    for s in [*SMALL_DARTS_SEARCH, f"run.threads={threads}"]:
        args += ["--set", s]
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert (tmp_path / "run" / "genotype.json").is_file()


@pytest.mark.parametrize("H", [6, 7, 8])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_factorized_reduce_equals_the_strided_convs(float64, H, memory_format):
    """The stride-1 form computes the two offset stride-2 1x1 convs of the original (float64,
    plain NCHW reference): outputs and every gradient."""
    torch.manual_seed(0)
    op = FactorizedReduce(4, 6, affine=True).to(memory_format=memory_format)
    x = torch.randn(3, 4, H, H).contiguous(memory_format=memory_format).requires_grad_()
    out = op(x)
    r = x.detach().contiguous().requires_grad_()
    rp = F.pad(F.relu(r), (0, H % 2, 0, H % 2))
    w1, w2 = (c.weight.detach().contiguous().requires_grad_() for c in (op.conv_1, op.conv_2))
    ref = torch.cat([F.conv2d(rp, w1, stride=2), F.conv2d(rp[:, :, 1:, 1:], w2, stride=2)], 1)
    ref = F.batch_norm(ref, None, None, op.bn.weight.detach(), op.bn.bias.detach(), True)
    assert out.shape == ref.shape == (3, 6, (H + 1) // 2, (H + 1) // 2)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, r.grad)
    torch.testing.assert_close(op.conv_1.weight.grad, w1.grad)
    torch.testing.assert_close(op.conv_2.weight.grad, w2.grad)
