"""Time one DARTS search step (alpha step + weight step) at paper size, and its peak memory.

    python benchmarks/search_step.py [--steps 5] [--device cpu|cuda] [--no-channels-last]

Each (space, order) runs in its own process so that peak memory is its own. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

SPACES = {  # paper-size supernets: batch 64, C=16 (NB201: N=5; DARTS: 8 cells)
    "nb201": dict(name="nb201", C=16, N=5),
    "darts": dict(name="darts", C=16, layers=8),
}


def measure(space: str, order: int, steps: int, device: str, channels_last: bool) -> dict:
    """Median wall time of `steps` search steps after one warm-up step, and peak memory."""
    from diffnas.arch import ArchParameters
    from diffnas.runs.config import SearchConfig, SpaceConfig
    from diffnas.search.darts import DartsSearch
    from diffnas.spaces import build_supernet

    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_supernet(SpaceConfig(**SPACES[space]), 3, 10).to(dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    arch = ArchParameters(model.arch_shapes()).to(dev)
    cfg = SearchConfig(order=order)  # the DARTS defaults (docs/METHODS.md section 1)
    search = DartsSearch(model, arch, cfg)
    search.on_epoch_start(0)

    def batch():
        x = torch.randn(64, 3, 32, 32, device=dev).contiguous(memory_format=fmt)
        return x, torch.randint(0, 10, (64,), device=dev)

    train, val = batch(), batch()
    search.step(train, val)  # warm-up
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        search.step(train, val)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    return {
        "space": space,
        "order": order,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "peak_gib": peak,
    }


def main() -> None:
    """Run every (space, order) in a subprocess and print the table."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="NCHW instead of channels_last (the search default)",
    )
    p.add_argument("--spaces", default="nb201,darts")
    p.add_argument("--orders", default="1,2")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        space, order = a.child.split(":")
        print(json.dumps(measure(space, int(order), a.steps, a.device, a.channels_last)))
        return
    rows = []
    for space in a.spaces.split(","):
        for order in (int(o) for o in a.orders.split(",")):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                f"{space}:{order}",
                "--steps",
                str(a.steps),
                "--device",
                a.device,
            ] + ([] if a.channels_last else ["--no-channels-last"])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"device={a.device} threads={torch.get_num_threads()} "
        f"channels_last={a.channels_last} batch=64 C=16 (NB201 N=5, DARTS 8 cells)"
    )
    mem = "peak GPU GiB" if a.device == "cuda" else "peak RSS GiB"
    print(f"{'space':<7}{'order':>6}{'median s/step':>15}{'min s/step':>12}{mem:>14}")
    for r in rows:
        print(
            f"{r['space']:<7}{r['order']:>6}{r['median_s']:>15.3f}{r['min_s']:>12.3f}"
            f"{r['peak_gib']:>14.2f}"
        )


if __name__ == "__main__":
    main()
