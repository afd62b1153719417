"""Search and final-training steps at paper size on a GPU: step time, peak memory, model FLOP
utilisation, and the projected wall time of a CIFAR-10-size search and final training.

    python benchmarks/gpu_scale.py [--device cuda] [--steps 20] [--autocast off,bf16]
                                   [--memory-formats channels_last,contiguous] [--small]
                                   [--peak-tflops T]

Rows: the first-order DARTS search step (alpha step + weight step, batch 64 of 32x32x3, C=16;
NB201 N=5, DARTS 8 cells) and the DARTS_V2 final-training step (C=36, 20 cells, batch 96,
auxiliary head, drop-path 0.2), for every (autocast, memory format) asked for. Per row:

- median s/step over `--steps` steps after warm-up (CUDA synchronised around each step);
- peak memory: `torch.cuda.max_memory_allocated` (on CPU: the process's peak RSS so far);
- model FLOPs of one step, counted by `torch.utils.flop_counter.FlopCounterMode` (convolutions
  and matmuls, forward and backward, as executed: ops at weight 0 never run and are not counted);
- MFU = FLOPs / step time / the device's dense peak for the row's math: bf16 tensor cores
  for `bf16`, TF32 for `off` on GPUs where PyTorch runs float32 convolutions in TF32 (its
  default); the peaks of known GPUs are listed in PEAK_TFLOPS, `--peak-tflops` overrides;
- projection: a 50-epoch search on CIFAR-10's 25k/25k split (391 steps of 64 per epoch plus an
  evaluation pass over the 25k validation images, timed as 391 forward passes in eval mode),
  and a 600-epoch DARTS_V2 training (521 steps of 96 per epoch, test pass not included).

`--small` shrinks everything (C=4, 1-3 cells, batch 8, 16x16) for a quick check of the script on
CPU; its numbers mean nothing.

CUDA graphs are not used: every supernet forward reads the edge weights on the host (which ops
are exactly zero, so that they are skipped), a device-to-host sync that graph capture forbids.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffnas.arch import ArchParameters
from diffnas.runs.config import SearchConfig, SpaceConfig, TrainConfig
from diffnas.runs.precision import autocast
from diffnas.search.darts import DartsSearch
from diffnas.search.objectives import ImageObjective
from diffnas.spaces import build_supernet
from diffnas.spaces.final import build_final_network
from diffnas.spaces.genotypes import load_genotype
from diffnas.train.image import ImageTrainer

# Dense peak TFLOP/s by (device-name substring, math): bf16 tensor cores; tf32 (float32 convs
# and matmuls under PyTorch's default cudnn.allow_tf32).
PEAK_TFLOPS = {
    ("H100", "bf16"): 989.4,
    ("H100", "tf32"): 494.7,
    ("H200", "bf16"): 989.4,
    ("H200", "tf32"): 494.7,
    ("A100", "bf16"): 312.0,
    ("A100", "tf32"): 156.0,
}
SEARCH_STEPS_PER_EPOCH = 391  # ceil(25000 / 64): CIFAR-10's training half, batch 64
TRAIN_STEPS_PER_EPOCH = 521  # ceil(50000 / 96)
FULL = {
    "batch": 64,
    "hw": 32,
    "nb201": dict(name="nb201", C=16, N=5),
    "darts": dict(name="darts", C=16, layers=8),
    "final": dict(C=36, layers=20, batch=96),
}
SMALL = {
    "batch": 8,
    "hw": 16,
    "nb201": dict(name="nb201", C=4, N=1),
    "darts": dict(name="darts", C=4, layers=3),
    "final": dict(C=4, layers=3, batch=8),
}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def peak_memory_gib(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**30
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmHWM")) / 2**20


def timed(step, steps: int, dev: torch.device) -> float:
    """Median seconds of `step()` over `steps` calls."""
    times = []
    for _ in range(steps):
        sync(dev)
        t = time.perf_counter()
        step()
        sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def count_flops(step) -> float:
    """FLOPs of one call of `step` (convolutions and matmuls, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def batch(n: int, hw: int, dev, fmt):
    x = torch.randn(n, 3, hw, hw, device=dev).contiguous(memory_format=fmt)
    return x, torch.randint(0, 10, (n,), device=dev)


def search_row(space: str, sizes: dict, dev, mode: str, fmt, steps: int) -> dict:
    """One first-order search step of `space`: time, memory, FLOPs; and an eval forward."""
    torch.manual_seed(0)
    model = build_supernet(SpaceConfig(**sizes[space]), 3, 10).to(dev, memory_format=fmt)
    arch = ArchParameters(model.arch_shapes()).to(dev)
    search = DartsSearch(
        model, arch, SearchConfig(order=1), objective=ImageObjective(autocast=mode)
    )
    search.on_epoch_start(0)
    train, val = (
        batch(sizes["batch"], sizes["hw"], dev, fmt),
        batch(sizes["batch"], sizes["hw"], dev, fmt),
    )

    def step():
        search.step(train, val)

    @torch.no_grad()
    def evaluate():
        model.eval()
        with autocast(dev, mode):
            model(val[0], arch.weights())
        model.train()

    step(), step(), evaluate()  # warm-up (cuDNN autotuning, allocator)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = timed(step, steps, dev)
    mem = peak_memory_gib(dev)
    t_eval = timed(evaluate, max(steps // 2, 1), dev)
    flops = count_flops(step)
    hours = 50 * SEARCH_STEPS_PER_EPOCH * (t + t_eval) / 3600
    return {"row": f"search {space}", "t": t, "mem": mem, "flops": flops, "hours": hours,
            "projection": "50-epoch search"}  # fmt: skip


def final_row(sizes: dict, dev, mode: str, fmt, steps: int) -> dict:
    """One DARTS_V2 final-training step (auxiliary head, drop-path)."""
    torch.manual_seed(0)
    f = sizes["final"]
    cfg = TrainConfig(C=f["C"], layers=f["layers"], drop_path=0.2, auxiliary_weight=0.4)
    model = build_final_network(load_genotype("DARTS_V2"), cfg, 3, 10)
    model = model.to(dev, memory_format=fmt)
    trainer = ImageTrainer(model, cfg, mode)
    trainer.start_epoch(300)
    x, y = batch(f["batch"], sizes["hw"], dev, fmt)

    def step():
        trainer.step(x, y)

    step(), step()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = timed(step, steps, dev)
    mem = peak_memory_gib(dev)
    flops = count_flops(step)
    hours = 600 * TRAIN_STEPS_PER_EPOCH * t / 3600
    return {"row": "train DARTS_V2", "t": t, "mem": mem, "flops": flops, "hours": hours,
            "projection": "600-epoch training"}  # fmt: skip


def peak_for(dev: torch.device, mode: str, override: float) -> float | None:
    """The dense peak TFLOP/s of the row's math on this device (None: unknown)."""
    if override:
        return override
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    math = "bf16" if mode == "bf16" else "tf32"
    return next((v for (k, m), v in PEAK_TFLOPS.items() if k in name and m == math), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--spaces", default="nb201,darts")
    p.add_argument("--autocast", default="off,bf16")
    p.add_argument("--memory-formats", default="channels_last,contiguous")
    p.add_argument("--no-final", dest="final", action="store_false", help="skip the training rows")
    p.add_argument("--small", action="store_true", help="tiny sizes: a quick check on CPU")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="override the device peak")
    a = p.parse_args()
    dev = torch.device(a.device)
    sizes = SMALL if a.small else FULL
    name = (
        torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    )
    print(f"device: {name} | torch {torch.__version__} | {'small' if a.small else 'paper'} sizes")
    if dev.type == "cuda":
        print(f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} cudnn.benchmark -> True")
        torch.backends.cudnn.benchmark = True
    formats = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    rows = []
    for mode in a.autocast.split(","):
        for fname in a.memory_formats.split(","):
            fmt = formats[fname]
            for space in [*a.spaces.split(","), *(["final"] if a.final else [])]:
                if space == "final":
                    r = final_row(sizes, dev, mode, fmt, a.steps)
                else:
                    r = search_row(space, sizes, dev, mode, fmt, a.steps)
                peak = peak_for(dev, mode, a.peak_tflops)
                r["mfu"] = r["flops"] / r["t"] / (peak * 1e12) if peak else None
                r["mode"], r["format"] = mode, fname
                rows.append(r)
                print(f"  done: {r['row']} autocast={mode} {fname}", flush=True)
    print(
        f"\n{'row':<16}{'autocast':>9}{'format':>15}{'s/step':>9}{'peak GiB':>10}"
        f"{'GFLOP/step':>12}{'TFLOP/s':>9}{'MFU':>7}{'projected':>11}  of"
    )
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(
            f"{r['row']:<16}{r['mode']:>9}{r['format']:>15}{r['t']:>9.4f}{r['mem']:>10.2f}"
            f"{r['flops'] / 1e9:>12.1f}{r['flops'] / r['t'] / 1e12:>9.2f}{mfu:>7}"
            f"{r['hours']:>10.2f}h  {r['projection']}"
        )
    print("MFU: against the dense bf16 peak for bf16 rows, the TF32 peak for the others.")


if __name__ == "__main__":
    main()
