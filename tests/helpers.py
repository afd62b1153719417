"""Small helpers shared by several test modules (imported as `helpers`; tests/ is on sys.path)."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn


def n_convs(module: nn.Module) -> int:
    """Conv2d layers inside a module."""
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


@contextlib.contextmanager
def conv_counter(model: nn.Module):
    """Count the convolutions of the model's nn.Conv2d layers run inside the block: calls of
    F.conv2d with one of their weights, whether through the module or a fused fast path."""
    weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    calls = [0]
    plain = F.conv2d

    def counting(input, weight, *args, **kwargs):
        calls[0] += id(weight) in weights
        return plain(input, weight, *args, **kwargs)

    F.conv2d = counting
    try:
        yield calls
    finally:
        F.conv2d = plain


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


# --------------------------------------------------------------------- gloo ranks on one CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args: tuple) -> None:
    """One spawned rank: torchrun's environment, one thread, the process group, then `fn`."""
    from diffnas.runs import distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    distributed.init_from_env(torch.device("cpu"))
    try:
        fn(*args)
    finally:
        distributed.cleanup()


def spawn(fn, world: int, *args) -> None:
    """Run fn(*args) on `world` gloo ranks (torch.multiprocessing.spawn); fn must be a
    module-level function of a test module."""
    mp.spawn(_entry, args=(world, _free_port(), fn, args), nprocs=world, join=True)


def torchrun(command: str, *args: str) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 -m diffnas COMMAND ARGS` (output captured)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    cmd += ["-m", "diffnas", command, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


# A tiny NB201 search on synthetic images (3 epochs of 3 weight steps): the base settings of the
# strategy tests.
TINY_NB201_SEARCH = [
    "space.name=nb201",
    "space.C=4",
    "space.N=1",
    "data.dataset=synthetic",
    "data.limit=48",
    "data.batch_size=8",
    "search.epochs=3",
    "run.threads=1",
    "run.progress=false",
    "run.tensorboard=false",
]


def log_records(path: Path) -> list[dict]:
    """The records of a run's JSON-lines log without their wall-clock fields."""
    import json

    recs = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "epoch_time_s")} for r in recs]


def search_and_resumed_search(tmp_path: Path, settings: list[str], stop_after: int = 1):
    """A search run through in tmp_path/a, and the same search stopped after `stop_after`
    epochs in tmp_path/b and resumed there: the two final genotypes as text."""
    from diffnas.runs.config import load_config
    from diffnas.runs.rundir import RunDir
    from diffnas.search.loop import run_search

    cfg = load_config(None, [*settings, f"run.out={tmp_path / 'a'}"])
    done = run_search(cfg, RunDir(tmp_path / "a").create(cfg), log=lambda s: None)
    cfg = load_config(None, [*settings, f"run.out={tmp_path / 'b'}"])
    run_search(cfg, RunDir(tmp_path / "b").create(cfg), log=lambda s: None, stop_after=stop_after)
    run = RunDir.open_existing(tmp_path / "b")
    resumed = run_search(run.read_config(), run, resume=True, log=lambda s: None)
    return str(done), str(resumed)
