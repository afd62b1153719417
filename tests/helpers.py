"""Small helpers shared by several test modules (imported as `helpers`; tests/ is on sys.path)."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

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
