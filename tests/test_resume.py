"""A search killed at any moment (kill -9) and resumed ends exactly like an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffnas.runs.rundir import RunDir

TINY = [
    "run.seed=3",
    "run.threads=1",
    "run.progress=false",
    "run.log_every=2",
    'data.dataset="synthetic"',
    "data.limit=96",
    "data.batch_size=16",
    "data.eval_batch_size=48",
    'space.name="nb201"',
    "space.C=4",
    "space.N=1",
    "search.epochs=4",
]


def _records(run_dir: Path, name: str) -> list[dict]:
    lines = (run_dir / name).read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    return [{k: v for k, v in r.items() if k not in ("time", "epoch_time_s")} for r in recs]


def _final_alphas(run_dir: Path) -> dict[str, torch.Tensor]:
    state = RunDir(run_dir).load_checkpoint()
    return {k: v for k, v in state["strategy"]["arch"].items() if k.startswith("alphas_")}


ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}


def _search_cmd(out: Path, settings: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "diffnas", "search", "--out", str(out)]
    for s in settings:
        cmd += ["--set", s]
    return cmd


@pytest.mark.parametrize("order", [1, 2])
def test_kill_9_then_resume_equals_uninterrupted(tmp_path, order):
    """kill -9 mid-run (after a checkpoint, mid-epoch), resume: same alphas, genotype, logs."""
    extra = [f"search.order={order}"]
    ref, out = tmp_path / "a", tmp_path / "b"
    r = subprocess.run(_search_cmd(ref, TINY + extra), env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    proc = subprocess.Popen(
        _search_cmd(out, TINY + extra), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    # Wait until the first epoch is checkpointed and at least one step record of epoch 2 is
    # logged, so the kill lands mid-epoch with lines written after the checkpoint.
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        metrics = out / "metrics.jsonl"
        if (out / "checkpoint.pt").exists() and metrics.exists():
            recs = [json.loads(x) for x in metrics.read_text().splitlines() if x.endswith("}")]
            if any(r.get("epoch") == 1 for r in recs):
                break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail(f"search ended before it could be killed: {proc.stderr.read().decode()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "genotype.json").exists()

    r = subprocess.run(
        [sys.executable, "-m", "diffnas", "search", "--resume", str(out)],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "genotype.json").read_text() == (ref / "genotype.json").read_text()
    a, b = _final_alphas(ref), _final_alphas(out)
    assert all(torch.equal(a[k], b[k]) for k in a), "alphas differ after resume"
    for name in ("metrics.jsonl", "genotypes.jsonl"):
        assert _records(out, name) == _records(ref, name), name


def test_resume_refuses_overrides_and_missing_checkpoint(tmp_path):
    """--resume of a directory without a checkpoint is a clear error, not a fresh run."""
    (tmp_path / "empty").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "diffnas", "search", "--resume", str(tmp_path / "empty")],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "checkpoint" in r.stderr and "Traceback" not in r.stderr
