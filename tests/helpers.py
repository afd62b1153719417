"""Small helpers shared by several test modules (imported as `helpers`; tests/ is on sys.path)."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import torch
from torch import nn


def n_convs(module: nn.Module) -> int:
    """Conv2d layers inside a module."""
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


@contextlib.contextmanager
def conv_counter(model: nn.Module):
    """Count the nn.Conv2d forward calls made inside the block."""
    calls = [0]
    hooks = [
        m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        yield calls
    finally:
        for h in hooks:
            h.remove()


# A tiny language-model run (4 units, BPTT 5, batches of 2, quiet): the LM tests' base settings.
TINY_LM = [
    "lm.emsize=4",
    "lm.nhid=4",
    "lm.bptt=5",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "lm.test_batch_size=2",
    "run.threads=1",
    "run.progress=false",
    "run.tensorboard=false",
]


def write_tiny_corpus(root: Path, seed: int) -> Path:
    """A tiny corpus in the PTB layout under `root`: random sentences over 12 words."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(12)]

    def text(lines):
        return "".join(
            " " + " ".join(rng.choice(words) for _ in range(rng.randint(2, 6))) + " \n"
            for _ in range(lines)
        )

    (root / "train.txt").write_text(" " + " ".join(words) + " \n" + text(35))
    (root / "valid.txt").write_text(text(6))
    (root / "test.txt").write_text(text(6))
    return root


def trained_looking(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights and BN running statistics, as after some training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))


def extend_weights(weights, shapes, seed):
    """The edge weights with random softmax rows appended for the new edges."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, w in weights.items():
        rows = shapes[k][0] - w.shape[0]
        new = torch.softmax(2 * torch.randn(rows, shapes[k][1], generator=g), -1)
        out[k] = torch.cat([w, new])
    return out
