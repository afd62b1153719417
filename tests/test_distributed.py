"""Data-parallel search over 2 gloo processes on CPU: replicas stay bitwise identical, 2
processes compute what 1 process computes on the same global batches, checkpoints resume across
a change of world size, and only rank 0 writes the run directory.

Equality across world sizes is checked in float64 (`run.dtype`): in float32 the reduction order
alone moves a run by up to a few percent within a few steps (as much as switching
`run.channels_last` does in a single process), which would hide real bugs behind a loose
tolerance.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import spawn, torchrun
from torch import nn

from diffnas.data import cycle_batches
from diffnas.runs import distributed
from diffnas.runs.config import ConfigError, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import build_search, epoch_seed, run_search

TINY = [
    "run.seed=3",
    "run.threads=1",
    "run.progress=false",
    "run.log_every=1",
    'data.dataset="synthetic"',
    "data.limit=96",
    "data.batch_size=16",
    "data.eval_batch_size=21",  # 48 val images: eval batches 21, 21, 6 split 11+10, 11+10, 3+3
    'space.name="nb201"',
    "space.C=4",
    "space.N=1",
    "search.epochs=4",
    "search.alpha_lr=0.01",  # alphas move well beyond their init, so comparisons mean something
]
F64 = ['run.dtype="float64"']
RTOL, ATOL = 1e-9, 1e-12  # float64; measured agreement is about 1e-13 relative


@pytest.fixture
def restore_threads():
    """In-process searches set torch's thread count (run.threads=1); put it back afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------ helpers


def _steps(settings: list[str], epochs: int) -> dict:
    """The search steps of `epochs` epochs, as run_search takes them; state after each step."""
    cfg = load_config(None, settings)
    s = build_search(cfg)
    st = s.strategy
    same, alphas = [], []
    for epoch in range(epochs):
        st.on_epoch_start(epoch)
        val = s.batches(cycle_batches(s.val, epoch_seed(cfg.run.seed, epoch, 1)))
        for batch in s.batches(s.train.epoch(epoch_seed(cfg.run.seed, epoch, 0))):
            st.step(batch, next(val))
            alphas.append([a.detach().clone() for a in st.arch.parameters()])
            state = [*st.arch.parameters(), *st.model.state_dict().values()]
            same.append(distributed.replicas_equal(state))
    return {"same": same, "alphas": alphas, "model": st.model.state_dict()}


def _steps_job(settings: list[str], epochs: int, path: Path) -> None:
    """Per rank: float32 steps with and without sync BN (replica check only), then float64 steps
    saved by rank 0."""
    with pytest.raises(ConfigError, match="divisible by the number of processes"):
        distributed.check_batches({"train": 48}, 15)
    with pytest.raises(ConfigError, match="last batch of the val split has 9"):
        distributed.check_batches({"train": 48, "val": 25}, 16)
    f32 = _steps(settings, epochs)
    per_rank_bn = _steps([*settings, "run.sync_bn=false"], epochs)
    f64 = _steps(settings + F64, epochs)
    if distributed.is_main():
        torch.save({"same_f32": f32["same"], "same_per_rank_bn": per_rank_bn["same"], **f64}, path)


def _search_job(settings: list[str], out: Path, stop_after: int | None) -> None:
    """Per rank: a fresh run_search in `out` (rank 0 creates it), as the CLI does."""
    cfg = load_config(None, [*settings, f"run.out={json.dumps(str(out))}"])
    run = RunDir(out)
    if distributed.is_main():
        run.create(cfg)
    run_search(cfg, run, log=lambda _: None, stop_after=stop_after)


def _search(out: Path, settings: list[str], stop_after: int | None = None) -> None:
    """A fresh single-process run_search in `out`."""
    cfg = load_config(None, [*settings, f"run.out={json.dumps(str(out))}"])
    run_search(cfg, RunDir(out).create(cfg), log=lambda _: None, stop_after=stop_after)


def _checkpoint(run_dir: Path) -> dict:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    del state["_rundir_log_sizes"]  # byte counts of logs whose floats differ in the last digits
    del state["_rundir_config"]  # config.toml's text: run.out differs
    return state


def _records(run_dir: Path, name: str) -> list[dict]:
    lines = (run_dir / name).read_text().splitlines()
    assert len(lines) == len(set(lines)), f"duplicate lines in {name}"
    drop = ("time", "epoch_time_s", "nb201_acc", "nb201_rank")  # the CLI adds the NB201 table's
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]


def _assert_close_json(a, b, where: str) -> None:
    """JSON values equal, floats to RTOL."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_close_json(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close_json(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _assert_same_run(got: Path, ref: Path) -> None:
    """Same checkpoint (every tensor, optimiser state and RNG), logs and genotype, to RTOL."""
    a, b = _checkpoint(got), _checkpoint(ref)
    rng_a, rng_b = a.pop("rng"), b.pop("rng")
    assert torch.equal(rng_a.pop("torch"), rng_b.pop("torch")) and rng_a == rng_b
    torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    assert (got / "genotype.json").read_text() == (ref / "genotype.json").read_text()
    for name in ("metrics.jsonl", "genotypes.jsonl"):
        _assert_close_json(_records(got, name), _records(ref, name), name)


def _assert_written_once(run_dir: Path, epochs: int, steps_per_epoch: int) -> None:
    """Every step and epoch logged exactly once, in order: only one rank wrote."""
    recs = _records(run_dir, "metrics.jsonl")
    steps = [r["step"] for r in recs if r["kind"] == "step"]
    assert steps == list(range(1, epochs * steps_per_epoch + 1))
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == list(range(epochs))
    assert [r["epoch"] for r in _records(run_dir, "genotypes.jsonl")] == list(range(epochs))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted single-process float64 run of 4 epochs (3 steps each)."""
    n = torch.get_num_threads()
    out = tmp_path_factory.mktemp("ref") / "run"
    _search(out, TINY + F64)
    torch.set_num_threads(n)
    return out


# -------------------------------------------------------------------------------------- tests


def test_sync_batchnorm_conversion_keeps_modules_and_state_dict():
    """Every BatchNorm2d becomes a SyncBatchNorm2d in place: same objects, tensors and keys; in
    one process it computes what it did before, running statistics included."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4, affine=False))
    ref = copy.deepcopy(model)
    modules, before = list(model.modules()), model.state_dict()
    tensors = {k: v.data_ptr() for k, v in before.items()}
    assert distributed.convert_sync_batchnorm(model) is model
    assert list(model.modules()) == modules
    assert [type(m) for m in model[1:]] == [distributed.SyncBatchNorm2d] * 2
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == tensors
    x = torch.randn(6, 3, 5, 5)
    for train in (True, False):
        model.train(train), ref.train(train)
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
    torch.testing.assert_close(model.state_dict(), ref.state_dict(), rtol=0, atol=0)


@pytest.mark.parametrize("order", [1, 2])
def test_two_ranks_identical_every_step_and_equal_one_process(tmp_path, order, restore_threads):
    """Alphas, weights and BN statistics bitwise equal on both ranks after each step (float32
    with and without sync BN, float64), and equal to one process on the same global batches
    (float64, to 1e-9)."""
    settings = [*TINY, f"search.order={order}"]
    spawn(_steps_job, 2, settings, 2, tmp_path / "two.pt")
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert two["same_f32"] == [True] * 6
    assert two["same_per_rank_bn"] == [True] * 6
    assert two["same"] == [True] * 6
    one = _steps(settings + F64, 2)
    for step, (a, b) in enumerate(zip(two["alphas"], one["alphas"], strict=True)):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, msg=f"alphas, step {step + 1}")
    # Weights, BN running statistics and num_batches_tracked.
    torch.testing.assert_close(two["model"], one["model"], rtol=RTOL, atol=ATOL)
    moved = (one["alphas"][-1][0] - one["alphas"][0][0]).abs().max()
    assert moved > 1e-3, "alphas barely moved; the comparison would be vacuous"


def test_resume_two_ranks_then_one_process(tmp_path, reference, restore_threads):
    """2 ranks for 2 epochs, then 1 process for 2 more = 1 process for 4 epochs."""
    out = tmp_path / "run"
    spawn(_search_job, 2, TINY + F64, out, 2)
    assert (out / "checkpoint.pt").exists() and not (out / "genotype.json").exists()
    run_search(RunDir(out).read_config(), RunDir.open_existing(out), True, log=lambda _: None)
    _assert_same_run(out, reference)
    _assert_written_once(out, 4, 3)


def test_torchrun_two_ranks_equal_one_process_rank0_writes(tmp_path, reference, restore_threads):
    """`torchrun -m diffnas search` on 2 ranks equals the 1-process run; rank 0 alone writes the
    run directory and prints."""
    out = tmp_path / "run"
    r = torchrun("search", "--out", str(out), *[x for s in TINY + F64 for x in ("--set", s)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("run directory:") == 1 and r.stdout.count("search finished") == 1
    _assert_same_run(out, reference)
    _assert_written_once(out, 4, 3)


def test_torchrun_resume_one_process_on_two_ranks(tmp_path, reference, restore_threads):
    """1 process for 2 epochs, then `torchrun ... --resume` on 2 ranks = 1 process for 4."""
    out = tmp_path / "run"
    _search(out, TINY + F64, stop_after=2)
    r = torchrun("search", "--resume", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("at epoch 2/4") == 1 and r.stdout.count("search finished") == 1
    _assert_same_run(out, reference)
    _assert_written_once(out, 4, 3)
