"""Multi-process data-parallel search on torch.distributed: process group, collectives, sync BN.

Launch with `torchrun --nproc_per_node=N -m diffnas search ...` (gloo on CPU, NCCL on GPU, one
GPU per process). `data.batch_size` is the global batch: every rank builds the same sequence of
global batches (same seeds, same augmentation) and trains on its contiguous shard of each. Weight
and alpha gradients and the logged metrics are averaged over the ranks with explicit all-reduces
(no DistributedDataParallel wrapper: the supernet's forward takes the edge weights as an argument
and the second-order architect calls `torch.func.functional_call`). With `run.sync_bn`, batch
norm uses the statistics of the global batch, so N ranks compute the function one process
computes on the global batch, up to float rounding.

Every helper here is a no-op (or the identity) in a single process, so callers need no branches.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from diffnas.runs.config import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]


# ------------------------------------------------------------------------------ process group


def env_world_size() -> int:
    """WORLD_SIZE as set by torchrun; 1 when the process was not started by a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1); return this rank's device."""
    if env_world_size() <= 1:
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} needs a GPU of its own, but only "
                f"{torch.cuda.device_count()} are visible; start at most that many processes "
                "per node (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return device


def is_distributed() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank; 0 in a single process."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks; 1 in a single process."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the only rank that writes the run directory and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank gets here."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo takes CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------------------------- collectives


def _groups(tensors: Sequence[torch.Tensor]) -> dict[tuple, list[int]]:
    """Indices of `tensors` grouped by (device, dtype), so each group travels as one buffer."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    return groups


def all_reduce_mean(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The mean over the ranks of each tensor, one flat buffer per dtype (inputs untouched)."""
    tensors = list(tensors)
    if not is_distributed() or not tensors:
        return tensors
    n = world_size()
    out: list[torch.Tensor] = list(tensors)
    for idx in _groups(tensors).values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(n)
        for i, chunk in zip(idx, flat.split([tensors[i].numel() for i in idx]), strict=True):
            out[i] = chunk.view(tensors[i].shape)
    return out


def average_gradients(params) -> None:
    """Replace each parameter's gradient by its mean over the ranks (no-op in one process).
    Parameters without a gradient (ops at weight 0 never ran: the same ones on every rank) are
    left alone."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    for g, mean in zip(grads, all_reduce_mean(grads), strict=True):
        g.copy_(mean)


def all_reduce_sum(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Sum each tensor over the ranks, in place; returns them."""
    tensors = list(tensors)
    if is_distributed():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return tensors


def sum_floats(values: Sequence[float]) -> list[float]:
    """The sums over the ranks of a few Python numbers (metrics, counts), in float64."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite each tensor with rank `src`'s, one flat buffer per dtype."""
    tensors = list(tensors)
    if not is_distributed() or not tensors:
        return
    for idx in _groups(tensors).values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])
        dist.broadcast(flat, src=src)
        with torch.no_grad():
            for i, chunk in zip(idx, flat.split([tensors[i].numel() for i in idx]), strict=True):
                tensors[i].copy_(chunk.view_as(tensors[i]))


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Give every rank rank `src`'s parameters and buffers."""
    broadcast_([*module.parameters(), *module.buffers()], src)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (tensors, containers, numbers, str; no pickled classes)."""
    if not is_distributed():
        return obj
    device = _comm_device()
    if rank() == src:
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8).to(device)
        size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    else:
        size = torch.zeros(1, dtype=torch.int64, device=device)
    dist.broadcast(size, src=src)
    if rank() != src:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(data, src=src)
    if rank() == src:
        return obj
    # weights_only: the bytes come from a peer, but we still never unpickle arbitrary classes.
    return torch.load(io.BytesIO(data.cpu().numpy().tobytes()), weights_only=True)


def replicas_equal(tensors: Sequence[torch.Tensor]) -> bool:
    """True when every rank holds bitwise the same values as rank 0 (a check for tests)."""
    if not is_distributed():
        return True
    mine = [t.detach().clone() for t in tensors]
    theirs = [t.clone() for t in mine]
    broadcast_(theirs)
    same = torch.tensor(
        [float(all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True)))],
        device=_comm_device(),
    )
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())


# ------------------------------------------------------------------------------------- data


def check_batches(split_sizes: dict[str, int], batch_size: int) -> None:
    """Raise ConfigError unless every batch of every split divides evenly over the ranks."""
    n = world_size()
    if batch_size % n:
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch and must be divisible by the "
            f"number of processes ({n}); choose a multiple of {n}"
        )
    for name, size in split_sizes.items():
        last = size % batch_size
        if last % n:
            raise ConfigError(
                f"the last batch of the {name} split has {last} images ({size} % data.batch_size "
                f"{batch_size}), which do not divide evenly over {n} processes; change data.limit, "
                "data.train_portion or data.batch_size so that it does"
            )


def shard(batch: Batch) -> Batch:
    """This rank's contiguous share of a global batch: rows [r*B/W, (r+1)*B/W)."""
    n, r = world_size(), rank()
    if n == 1:
        return batch
    x, y = batch
    if len(y) % n:
        raise ValueError(f"a batch of {len(y)} rows cannot be split evenly over {n} processes")
    k = len(y) // n
    return x[r * k : (r + 1) * k], y[r * k : (r + 1) * k]


def split_rows(batch: Batch) -> Batch:
    """This rank's part of an evaluation batch of any size (parts may differ by one row)."""
    n = world_size()
    if n == 1:
        return batch
    x, y = batch
    return x.tensor_split(n)[rank()], y.tensor_split(n)[rank()]


# ---------------------------------------------------------------------- synchronised batch norm


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x; the gradient of x is the sum over ranks of the gradients of y."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank's loss depends on y, so x's gradient gathers all of theirs.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def differentiable_all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over the ranks, with gradients flowing back to every rank's `x`."""
    return _AllReduceSum.apply(x)


def sync_batch_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    momentum: float,
    eps: float,
) -> torch.Tensor:
    """Training-mode batch norm over the union of all ranks' batches (differentiable).

    Two all-reduces (sum and count, then the centred sum of squares) keep the variance as
    accurate as a two-pass computation; `differentiable_all_reduce_sum` carries the gradients of
    the statistics back to every rank. Running statistics are updated with the unbiased global
    variance, as `nn.BatchNorm2d` does on one process.
    """
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    # Accumulate as the native kernels do: in double on CPU, in float on GPU.
    acc = torch.float64 if x.device.type == "cpu" else torch.float32
    count_local = torch.tensor([x.numel() // x.shape[1]], dtype=acc, device=x.device)
    totals = differentiable_all_reduce_sum(torch.cat([x.sum(dims, dtype=acc), count_local]))
    count = totals[-1]
    mean = totals[:-1] / count
    centred = x - mean.to(x.dtype).view(shape)
    var = differentiable_all_reduce_sum((centred * centred).sum(dims, dtype=acc)) / count
    invstd = torch.rsqrt(var + eps).to(x.dtype)
    out = centred * invstd.view(shape)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            unbiased = var * count / (count - 1)
            running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    return out


class SyncBatchNorm2d(_BatchNorm):
    """Batch norm that normalises with the global batch's statistics when distributed.

    Made from an `nn.BatchNorm2d` by `convert_sync_batchnorm`: same parameters, buffers and
    state_dict keys; in eval mode and in a single process it computes exactly what the
    `nn.BatchNorm2d` did. Like `torch.nn.SyncBatchNorm` (which accepts only GPU inputs) it is a
    `_BatchNorm` but not an `nn.BatchNorm2d`, so code that reimplements plain `nn.BatchNorm2d`
    inline (rather than calling the module) leaves it alone.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Batch norm; batch statistics are taken over all ranks."""
        batch_stats = self.training or self.running_mean is None
        if not batch_stats or not is_distributed():
            return super().forward(x)
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        track = self.training and self.track_running_stats and self.num_batches_tracked is not None
        if track:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        return sync_batch_norm(
            x,
            self.weight,
            self.bias,
            self.running_mean if track else None,
            self.running_var if track else None,
            factor,
            self.eps,
        )


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Turn every `nn.BatchNorm2d` below `module` into a SyncBatchNorm2d, in place; returns it.

    The class of each module object is swapped, nothing is rebuilt: parameters, buffers,
    state_dict keys, optimiser references and any reference other code holds to the module stay
    valid.
    """
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = SyncBatchNorm2d
    return module
