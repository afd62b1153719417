"""diffnas against xautodl 1.0.0 (the DARTS-V1 reference users compare with): same function,
then search-step speed and peak memory.

    python benchmarks/vs_xautodl.py [--space nb201|darts|both] [--steps N] [--check-only] [--small]
                                    [--threads T] [--no-channels-last] [--darts-as-is]
                                    [--allow-mismatch]

For each space:

1. Equivalence. Build xautodl's supernet (NB201: `TinyNetworkDarts`; DARTS space:
   `NASNetworkDARTS`) and ours at the same configuration, copy our weights into theirs through an
   explicit module-by-module map (every parameter and BN buffer of both sides must be covered),
   copy our alphas into their arch parameters (rows by `edge2index`, columns by op name), and
   compare in train mode (batch-statistics BN) on one input: the logits, the gradient of the loss
   w.r.t. the alphas, and the BN running buffers after the forward. Relative difference =
   max|ours - theirs| / max|theirs| (running means: max |ours - theirs| / running std); it must
   be <= 1e-5 in float64 (all three) and <= 1e-4 in float32 (logits; the rest is reported).
   Any structural difference found by the map fails the check too, whatever the numbers say.
   xautodl's search-cell convs have `bias=not affine`, i.e. a bias before a non-affine
   batch-statistics BN; ours have none. The BN subtracts the batch mean, which cancels a
   per-channel bias exactly, so their biases are set to zero (the function is unchanged).
2. Speed. One process builds both (float32), copies the weights, and runs first-order search
   steps of the two alternately (after a warm-up); median seconds per step. Ours: `DartsSearch`
   with order=1 (alpha step on the val batch, then weight step with grad clip 5), channels_last by
   default. xautodl: one iteration of `search_func` of exps/NAS-Bench-201-algos/DARTS-V1.py,
   replicated line by line (weight step with clip 5, then the alpha step; optimisers as its
   configs/nas-benchmark/algos/DARTS.config: SGD lr 0.025, momentum 0.9, nesterov, decay 5e-4;
   Adam 3e-4, betas (0.5, 0.999), decay 1e-3).
3. Memory. Each implementation alone in its own child process (imports only that library):
   peak RSS (resource.getrusage) after a warm-up step and two steps, and the same minus the RSS
   before the model was built.

A check that fails is printed loudly, that space is not timed (unless --allow-mismatch, which
times it anyway and marks its rows), and the script exits with status 1.

Known structural difference (found by this script): xautodl's `NASNetworkDARTS` is not the
original DARTS search network that ours follows. (a) Its MixedOp pooling ops have no BatchNorm
after them (original DARTS and ours: pool -> BatchNorm2d(affine=False)); (b) it has a head
`lastact` = BatchNorm2d + ReLU before the global pooling (original DARTS and ours: none);
(c) it has 3N cells with reductions at N and 2N, so "8 cells" cannot be built: the DARTS space is
compared at N=3, i.e. 9 cells on both sides. xautodl's network as it ships therefore fails the
check. By default the script then patches (a) and (b) into xautodl's instance (a non-affine BN
after each MixedOp pooling, `lastact` replaced by the identity: xautodl's own modules otherwise),
checks that the two now agree, and times and measures that patched instance, so both sides
compute the same function, as the comparison requires. `--darts-as-is` times xautodl's network
unpatched instead (a slightly cheaper, different function: only with --allow-mismatch).

Sizes: batch 64, 32x32x3, C=16, NB201 N=5, DARTS 9 cells (--small: batch 4, 16x16, C=4, N=1,
i.e. NB201 5 cells and DARTS 3 cells). The equivalence check uses a batch of
min(batch, --check-batch) at the same model configuration.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import statistics
import subprocess
import sys
import time
import types

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.runs.config import SearchConfig

INSTALL = "pip install --no-deps xautodl==1.0.0"
TOL = {torch.float64: 1e-5, torch.float32: 1e-4}
NUM_CLASSES = 10

# N: NB201 cells per stage / xautodl NASNetworkDARTS N (our DARTS supernet gets 3N cells).
SIZES = {
    "full": {
        "nb201": dict(C=16, N=5, batch=64, hw=32),
        "darts": dict(C=16, N=3, batch=64, hw=32),
    },
    "small": {
        "nb201": dict(C=4, N=1, batch=4, hw=16),
        "darts": dict(C=4, N=1, batch=4, hw=16),
    },
}

# Our op name -> xautodl's name for the same op (xautodl's DARTS space renames the separable
# convs: its `SepConv` is DARTS's dil_conv, its `DualSepConv` is DARTS's sep_conv).
XAUTODL_OP = {
    "none": "none",
    "skip_connect": "skip_connect",
    "nor_conv_1x1": "nor_conv_1x1",
    "nor_conv_3x3": "nor_conv_3x3",
    "avg_pool_3x3": "avg_pool_3x3",
    "max_pool_3x3": "max_pool_3x3",
    "sep_conv_3x3": "dua_sepc_3x3",
    "sep_conv_5x5": "dua_sepc_5x5",
    "dil_conv_3x3": "dil_sepc_3x3",
    "dil_conv_5x5": "dil_sepc_5x5",
}

OUR_CFG = SearchConfig(order=1, epochs=50)  # the DARTS defaults (docs/METHODS.md section 1)


def import_xautodl() -> types.SimpleNamespace:
    """The xautodl classes used here, or exit with the install command."""
    try:
        from xautodl.models import cell_operations as xops
        from xautodl.models.cell_searchs import NASNetworkDARTS, TinyNetworkDarts
        from xautodl.models.cell_searchs.search_cells import NAS201SearchCell, NASNetSearchCell
    except ImportError as e:
        raise SystemExit(
            f"xautodl is not installed or not importable ({e}).\n"
            f"Install the reference implementation with:\n    {INSTALL}\n"
            "(--no-deps: the supernets are pure Python; its declared deps are not needed here "
            "and torch is left as it is)"
        ) from None
    return types.SimpleNamespace(
        ops=xops,
        TinyNetworkDarts=TinyNetworkDarts,
        NASNetworkDARTS=NASNetworkDARTS,
        NAS201SearchCell=NAS201SearchCell,
        NASNetSearchCell=NASNetSearchCell,
    )


# ------------------------------------------------------------------------------------ building


def build_ours(space: str, size: dict) -> nn.Module:
    """Our supernet at `size`."""
    if space == "nb201":
        from diffnas.spaces.nb201 import NB201SuperNet

        return NB201SuperNet(size["C"], size["N"], 3, NUM_CLASSES)
    from diffnas.spaces.darts_cnn import DartsSuperNet

    return DartsSuperNet(size["C"], 3 * size["N"], 3, NUM_CLASSES, 4, 4, 3)


def build_theirs(space: str, size: dict, xa) -> nn.Module:
    """xautodl's supernet at `size`, built as DARTS-V1.py builds it (affine=False, tracked BN)."""
    if space == "nb201":
        return xa.TinyNetworkDarts(
            size["C"], size["N"], 4, NUM_CLASSES, xa.ops.SearchSpaceNames["nas-bench-201"],
            affine=False, track_running_stats=True,
        )  # fmt: skip
    return xa.NASNetworkDARTS(
        size["C"], size["N"], 4, 4, 3, NUM_CLASSES, xa.ops.SearchSpaceNames["darts"],
        affine=False, track_running_stats=True,
    )  # fmt: skip


# ---------------------------------------------------------------------------- the weight map


class WeightMap:
    """Copies our weights into xautodl's module by module and records every difference.

    Structural differences are collected (not raised) so that one run lists them all; the
    tensors copied on each side are tracked so that anything left unmapped is reported too.
    """

    def __init__(self, xa):
        self.xa = xa
        self.covered: set[int] = set()  # ids of the parameters/buffers mapped, both sides
        self.differences: dict[str, int] = {}  # message -> how many sites
        self.zeroed_biases = 0
        self.bn_pairs: list[tuple[str, nn.BatchNorm2d, nn.BatchNorm2d]] = []
        self.pool_bn_sites: list[tuple[nn.Module, nn.Module]] = []  # (our BN, their POOLING)

    def differ(self, msg: str) -> None:
        """Record a structural difference."""
        self.differences[msg] = self.differences.get(msg, 0) + 1

    def _copy(self, where: str, dst: torch.Tensor, src: torch.Tensor) -> None:
        if dst.shape != src.shape:
            self.differ(f"{where}: shape {tuple(src.shape)} (ours) vs {tuple(dst.shape)}")
            return
        with torch.no_grad():
            dst.copy_(src)
        self.covered.update((id(dst), id(src)))

    def conv(self, where: str, o: nn.Conv2d, t: nn.Conv2d) -> None:
        """Conv2d -> Conv2d; their bias (before a batch-stat BN) is zeroed, see the docstring."""
        if not (isinstance(o, nn.Conv2d) and isinstance(t, nn.Conv2d)):
            self.differ(f"{where}: {type(o).__name__} (ours) vs {type(t).__name__}")
            return
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups", "padding_mode"):  # fmt: skip
            if getattr(o, attr) != getattr(t, attr):
                self.differ(f"{where}: conv {attr} {getattr(o, attr)} (ours) vs {getattr(t, attr)}")
        self._copy(where + ".weight", t.weight, o.weight)
        if o.bias is not None and t.bias is not None:
            self._copy(where + ".bias", t.bias, o.bias)
        elif t.bias is not None:
            with torch.no_grad():
                t.bias.zero_()
            self.covered.add(id(t.bias))
            self.zeroed_biases += 1
        elif o.bias is not None:
            self.differ(f"{where}: conv bias in ours only")

    def bn(self, where: str, o: nn.BatchNorm2d, t: nn.BatchNorm2d) -> None:
        """BatchNorm2d -> BatchNorm2d, affine parameters and running buffers."""
        if not (isinstance(o, nn.BatchNorm2d) and isinstance(t, nn.BatchNorm2d)):
            self.differ(f"{where}: {type(o).__name__} (ours) vs {type(t).__name__}")
            return
        for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
            if getattr(o, attr) != getattr(t, attr):
                self.differ(f"{where}: BN {attr} {getattr(o, attr)} (ours) vs {getattr(t, attr)}")
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            a, b = getattr(o, name), getattr(t, name)
            if a is not None and b is not None:
                self._copy(f"{where}.{name}", b, a)
        self.bn_pairs.append((where, o, t))

    def linear(self, where: str, o: nn.Linear, t: nn.Linear) -> None:
        """Linear -> Linear."""
        self._copy(where + ".weight", t.weight, o.weight)
        self._copy(where + ".bias", t.bias, o.bias)

    def relu_conv_bn(self, where: str, o: nn.Sequential, t: nn.Module) -> None:
        """Ours: Sequential(ReLU, Conv, BN) -> xautodl ReLUConvBN: .op = the same Sequential."""
        if not isinstance(t, self.xa.ops.ReLUConvBN) or len(o) != 3:
            self.differ(f"{where}: {type(o).__name__} (ours) vs {type(t).__name__}")
            return
        self._relu(where, o[0], t.op[0])
        self.conv(where + ".conv", o[1], t.op[1])
        self.bn(where + ".bn", o[2], t.op[2])

    def _relu(self, where: str, o: nn.Module, t: nn.Module) -> None:
        if not (isinstance(o, nn.ReLU) and isinstance(t, nn.ReLU)):
            self.differ(f"{where}: {type(o).__name__} (ours) vs {type(t).__name__} (want ReLU)")

    def dil_conv(self, where: str, o: nn.Sequential, t: nn.Module) -> None:
        """Ours DilConv (ReLU, depthwise, pointwise, BN) -> xautodl SepConv (same, in .op)."""
        if not isinstance(t, self.xa.ops.SepConv) or len(o) != 4:
            self.differ(f"{where}: {type(o).__name__} (ours) vs {type(t).__name__}")
            return
        self._relu(where, o[0], t.op[0])
        self.conv(where + ".dw", o[1], t.op[1])
        self.conv(where + ".pw", o[2], t.op[2])
        self.bn(where + ".bn", o[3], t.op[3])

    def sep_conv(self, where: str, o: nn.Sequential, t: nn.Module) -> None:
        """Ours SepConv (two DilConv) -> xautodl DualSepConv (op_a, op_b)."""
        if not isinstance(t, self.xa.ops.DualSepConv) or len(o) != 2:
            self.differ(f"{where}: {type(o).__name__} (ours) vs {type(t).__name__}")
            return
        self.dil_conv(where + ".a", o[0], t.op_a)
        self.dil_conv(where + ".b", o[1], t.op_b)

    def factorized_reduce(self, where: str, o: nn.Module, t: nn.Module) -> None:
        """conv_1, conv_2, bn -> convs[0], convs[1], bn (their odd-size padding is a no-op on
        even sizes, as is ours)."""
        if not isinstance(t, self.xa.ops.FactorizedReduce) or t.stride != 2:
            self.differ(f"{where}: FactorizedReduce (ours) vs {type(t).__name__}")
            return
        self.conv(where + ".conv_1", o.conv_1, t.convs[0])
        self.conv(where + ".conv_2", o.conv_2, t.convs[1])
        self.bn(where + ".bn", o.bn, t.bn)

    def pool(self, where: str, kind: str, o: nn.Module, t: nn.Module) -> None:
        """Ours Pool -> xautodl POOLING; also detects our DARTS pool -> BN wrapper."""
        from diffnas.ops.cnn import AvgPool3x3, Pool

        if isinstance(o, nn.Sequential) and len(o) == 2 and isinstance(o[1], nn.BatchNorm2d):
            self.differ(
                "MixedOp pooling: ours is pool -> BatchNorm2d(affine=False) (as original DARTS), "
                "xautodl's POOLING has no BN after the pool"
            )
            self.pool_bn_sites.append((o[1], t))
            self.covered.update(id(b) for b in o[1].buffers())
            o = o[0]
        if not (isinstance(o, Pool) and isinstance(t, self.xa.ops.POOLING)):
            self.differ(f"{where}: {type(o).__name__} (ours) vs {type(t).__name__}")
            return
        if (o.pre is None) != (t.preprocess is None):
            self.differ(f"{where}: 1x1 preprocess in one side only")
        elif o.pre is not None:
            self.relu_conv_bn(where + ".pre", o.pre, t.preprocess)
        if kind == "avg":
            ok = (
                isinstance(o.pool, AvgPool3x3)
                and isinstance(t.op, nn.AvgPool2d)
                and (t.op.kernel_size, t.op.padding, t.op.ceil_mode) == (3, 1, False)
                and t.op.count_include_pad is False
                and t.op.stride == o.pool.stride
            )
        else:
            ok = (
                isinstance(o.pool, nn.MaxPool2d)
                and isinstance(t.op, nn.MaxPool2d)
                and all(
                    getattr(o.pool, a) == getattr(t.op, a)
                    for a in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
                )
            )
        if not ok:
            self.differ(f"{where}: {kind} pool {o.pool} (ours) vs {t.op}")

    def op(self, where: str, name: str, o: nn.Module, t: nn.Module, stride: int) -> None:
        """One candidate op of a mixed edge, dispatched on our op name."""
        from diffnas.ops.cnn import FactorizedReduce, Identity, Zero

        x = self.xa.ops
        if name == "none":
            if not (isinstance(o, Zero) and isinstance(t, x.Zero) and o.stride == t.stride):
                self.differ(f"{where}: none op {o} (ours) vs {t}")
        elif name == "skip_connect":
            if stride == 1:
                if not (isinstance(o, Identity) and isinstance(t, x.Identity)):
                    self.differ(f"{where}: skip {type(o).__name__} (ours) vs {type(t).__name__}")
            elif isinstance(o, FactorizedReduce):
                self.factorized_reduce(where, o, t)
            else:
                self.differ(f"{where}: stride-2 skip is {type(o).__name__} in ours")
        elif name in ("nor_conv_1x1", "nor_conv_3x3"):
            self.relu_conv_bn(where, o, t)
        elif name in ("avg_pool_3x3", "max_pool_3x3"):
            self.pool(where, name[:3], o, t)
        elif name.startswith("sep_conv"):
            self.sep_conv(where, o, t)
        elif name.startswith("dil_conv"):
            self.dil_conv(where, o, t)
        else:
            self.differ(f"{where}: op {name!r} has no mapping")

    def unmapped(self, ours: nn.Module, theirs: nn.Module, skip: set[int]) -> list[str]:
        """Parameters and buffers of either model that no mapping touched."""
        out = []
        for side, model in (("ours", ours), ("xautodl", theirs)):
            for n, t in [*model.named_parameters(), *model.named_buffers()]:
                if id(t) not in self.covered and id(t) not in skip:
                    out.append(f"{side}:{n}{tuple(t.shape)}")
        return out


def map_stem(m: WeightMap, ours: nn.Module, theirs: nn.Module) -> None:
    """The stem conv + BN (both spaces), and a check that the cell counts match."""
    m.conv("stem.conv", ours.stem[0], theirs.stem[0])
    m.bn("stem.bn", ours.stem[1], theirs.stem[1])
    if len(ours.cells) != len(theirs.cells):
        m.differ(f"cell count {len(ours.cells)} (ours) vs {len(theirs.cells)}")


def map_nb201(m: WeightMap, ours: nn.Module, theirs: nn.Module) -> None:
    """Our NB201SuperNet -> xautodl TinyNetworkDarts."""
    from diffnas.spaces.nb201 import EDGES, ResNetBasicBlock, SearchCell

    map_stem(m, ours, theirs)
    for i, (oc, tc) in enumerate(zip(ours.cells, theirs.cells, strict=False)):
        w = f"cells.{i}"
        if isinstance(oc, ResNetBasicBlock) and isinstance(tc, m.xa.ops.ResNetBasicblock):
            m.relu_conv_bn(w + ".conv_a", oc.conv_a, tc.conv_a)
            m.relu_conv_bn(w + ".conv_b", oc.conv_b, tc.conv_b)
            op, tp = oc.downsample[0], tc.downsample[0]
            if not (
                isinstance(op, nn.AvgPool2d)
                and isinstance(tp, nn.AvgPool2d)
                and (op.kernel_size, op.stride, op.padding) == (tp.kernel_size, tp.stride, 0)
            ):
                m.differ(f"{w}.downsample: {op} (ours) vs {tp}")
            m.conv(w + ".downsample.conv", oc.downsample[1], tc.downsample[1])
        elif isinstance(oc, SearchCell) and isinstance(tc, m.xa.NAS201SearchCell):
            for k, (fr, to) in enumerate(EDGES):
                key = f"{to}<-{fr}"
                for o, name in enumerate(ours.op_names):
                    t_op = tc.edges[key][tc.op_names.index(XAUTODL_OP[name])]
                    m.op(f"{w}.{key}.{name}", name, oc.edges[k].ops[o], t_op, 1)
        else:
            m.differ(f"{w}: {type(oc).__name__} (ours) vs {type(tc).__name__}")
    m.bn("lastact.bn", ours.lastact[0], theirs.lastact[0])
    m.linear("classifier", ours.classifier, theirs.classifier)


def map_darts(m: WeightMap, ours: nn.Module, theirs: nn.Module) -> None:
    """Our DartsSuperNet -> xautodl NASNetworkDARTS."""
    from diffnas.ops.cnn import FactorizedReduce

    map_stem(m, ours, theirs)
    for i, (oc, tc) in enumerate(zip(ours.cells, theirs.cells, strict=False)):
        w = f"cells.{i}"
        if not isinstance(tc, m.xa.NASNetSearchCell) or oc.reduction != tc.reduction:
            m.differ(f"{w}: reduction {oc.reduction} (ours) vs {getattr(tc, 'reduction', '?')}")
            continue
        if (oc.steps, oc.multiplier) != (tc._steps, tc._multiplier):
            m.differ(f"{w}: steps/multiplier {(oc.steps, oc.multiplier)} (ours) vs theirs")
        if isinstance(oc.preprocess0, FactorizedReduce):
            m.factorized_reduce(w + ".preprocess0", oc.preprocess0, tc.preprocess0)
        else:
            m.relu_conv_bn(w + ".preprocess0", oc.preprocess0, tc.preprocess0)
        m.relu_conv_bn(w + ".preprocess1", oc.preprocess1, tc.preprocess1)
        for e, (j, node) in enumerate(oc.edges):
            key = f"{node - 2}<-{j}"  # xautodl: "{intermediate node}<-{input}"
            mixed = oc.ops[e]
            stride = 2 if oc.reduction and j < 2 else 1
            for o, name in enumerate(mixed.op_names):
                t_op = tc.edges[key]._ops[tc.op_names.index(XAUTODL_OP[name])]
                m.op(f"{w}.{key}.{name}", name, mixed.ops[o], t_op, stride)
    if hasattr(theirs, "lastact") and not hasattr(ours, "lastact"):
        m.differ(
            "head: xautodl applies lastact = BatchNorm2d + ReLU before the global pooling; "
            "ours (as original DARTS) pools the last cell's output directly"
        )
    m.linear("classifier", ours.classifier, theirs.classifier)


def alpha_maps(space: str, ours: nn.Module, theirs: nn.Module) -> list[tuple]:
    """(our weight name, their arch parameter, row index, column index) per cell type.

    Row k / column o of our alphas is row rows[k] / column cols[o] of theirs.
    """
    if space == "nb201":
        from diffnas.spaces.nb201 import EDGES

        keys = {"cell": [f"{to}<-{fr}" for fr, to in EDGES]}
        params = {"cell": theirs.arch_parameters}
        op_names = {"cell": ours.op_names}
    else:
        from diffnas.spaces.darts_cnn import edge_list

        keys = {k: [f"{n - 2}<-{j}" for j, n in edge_list(ours.steps)] for k in ours.edge_ops}
        params = {"normal": theirs.arch_normal_parameters, "reduce": theirs.arch_reduce_parameters}
        op_names = {k: v[0] for k, v in ours.edge_ops.items()}
    out = []
    for name, p in params.items():
        rows = torch.tensor([theirs.edge2index[key] for key in keys[name]])
        cols = torch.tensor([theirs.op_names.index(XAUTODL_OP[o]) for o in op_names[name]])
        if p.shape != (len(rows), len(cols)) or sorted(rows.tolist()) != list(range(len(rows))):
            raise SystemExit(f"alphas {name}: xautodl shape {tuple(p.shape)} does not match ours")
        out.append((name, p, rows, cols))
    return out


def copy_alphas(amaps, arch) -> None:
    """Our alphas into xautodl's arch parameters (same softmax weights per edge and op)."""
    ours = arch.alphas()
    with torch.no_grad():
        for name, p, rows, cols in amaps:
            p[rows[:, None], cols[None, :]] = ours[name].to(p.dtype)


def build_pair(space: str, size: dict, dtype, channels_last: bool, xa, alpha_std: float):
    """Both supernets with our weights and alphas copied into xautodl's; the map's findings."""
    from diffnas.arch import ArchParameters

    torch.manual_seed(0)
    ours = build_ours(space, size).to(dtype)
    theirs = build_theirs(space, size, xa).to(dtype)
    arch = ArchParameters(ours.arch_shapes()).to(dtype)
    if alpha_std:
        with torch.no_grad():
            for a in arch.parameters():
                a.normal_(0.0, alpha_std)
    m = WeightMap(xa)
    (map_nb201 if space == "nb201" else map_darts)(m, ours, theirs)
    amaps = alpha_maps(space, ours, theirs)
    copy_alphas(amaps, arch)
    unmapped = m.unmapped(ours, theirs, skip={id(p) for p in theirs.get_alphas()})
    if channels_last:
        ours = ours.to(memory_format=torch.channels_last)
    return ours, theirs, arch, m, amaps, unmapped


# ------------------------------------------------------------------------------ equivalence


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b| (b is xautodl's)."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def bn_buffer_diffs(o: nn.BatchNorm2d, t: nn.BatchNorm2d) -> tuple[float, float]:
    """Running mean error in units of the running std (a mean near zero has no relative scale of
    its own; the std is the scale at which it enters the normalised output), and rel(var)."""
    std = (t.running_var.double() + t.eps).sqrt()
    dm = ((o.running_mean.double() - t.running_mean.double()).abs() / std).max().item()
    return dm, rel(o.running_var, t.running_var)


def compare(space, ours, theirs, arch, m, amaps, size, dtype, channels_last) -> dict:
    """Train-mode forward of both on one input: logits, alpha gradients, BN buffers."""
    batch = min(size["batch"], size["check_batch"])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size["hw"], size["hw"], generator=g, dtype=dtype)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ours.train()
    theirs.train()
    lo = ours(x.contiguous(memory_format=fmt), arch.weights())
    _, lt = theirs(x)
    go = torch.autograd.grad(F.cross_entropy(lo, y), list(arch.alphas().values()))
    gt = torch.autograd.grad(F.cross_entropy(lt, y), [p for _, p, _, _ in amaps])
    grads = [
        rel(a, b[rows[:, None], cols[None, :]])
        for a, b, (_, _, rows, cols) in zip(go, gt, amaps, strict=True)
    ]
    buffers = [
        d
        for _, o, t in m.bn_pairs
        if o.track_running_stats and t.track_running_stats
        for d in bn_buffer_diffs(o, t)
    ]
    return {
        "logits": rel(lo, lt),
        "alpha_grad": max(grads),
        "bn_buffers": max(buffers, default=0.0),
        "logit_scale": lt.abs().max().item(),
    }


def worst_of(r: dict) -> float:
    """The largest difference; inf if any is NaN (a NaN must never pass)."""
    vals = (r["logits"], r["alpha_grad"], r["bn_buffers"])
    return max(vals) if all(math.isfinite(v) for v in vals) else math.inf


def patch_like_ours(theirs: nn.Module, m: WeightMap) -> None:
    """Give xautodl's instance our (the original) DARTS structure: a non-affine BN after each
    MixedOp pooling, no lastact. The equivalence check then compares, and the timing times, it."""
    for our_bn, pooling in m.pool_bn_sites:
        their_bn = copy.deepcopy(our_bn)
        pooling.op = nn.Sequential(pooling.op, their_bn)
        m.bn_pairs.append(("pool_bn", our_bn, their_bn))  # compared like the others
        m.covered.update(id(b) for b in their_bn.buffers())
    theirs.lastact = nn.Identity()


def check_space(space: str, size: dict, channels_last: bool, xa, patch: bool) -> bool:
    """The equivalence check in float64 and float32; prints the findings; True if it passes.

    With `patch`, a DARTS-space network that differs only by the known structural differences
    passes when xautodl's instance, patched to our structure, agrees (and is what is timed)."""
    ok = True
    print(f"\n== equivalence: {space} {describe(space, size)} ==")
    for dtype in (torch.float64, torch.float32):
        pair = build_pair(space, size, dtype, channels_last, xa, alpha_std=1.0)
        ours, theirs, arch, m, amaps, unmapped = pair
        r = compare(space, ours, theirs, arch, m, amaps, size, dtype, channels_last)
        name = str(dtype).removeprefix("torch.")
        passed = report(name, dtype, r, m.zeroed_biases, m.differences or unmapped)
        if dtype == torch.float64 and (m.differences or unmapped):
            print("  structural differences found by the weight map:")
            for msg, n in m.differences.items():
                print(f"   - {msg}" + (f"  [{n} sites]" if n > 1 else ""))
            for u in unmapped[:10]:
                print(f"   - unmapped tensor {u}")
            if len(unmapped) > 10:
                print(f"   - ... and {len(unmapped) - 10} more unmapped tensors")
        if not passed and space == "darts" and m.differences:
            # A fresh pair: the failed forward above left the BN running stats unequal.
            ours, theirs, arch, m, amaps, unmapped = build_pair(
                space, size, dtype, channels_last, xa, alpha_std=1.0
            )
            patch_like_ours(theirs, m)
            unmapped = m.unmapped(ours, theirs, skip={id(p) for p in theirs.get_alphas()})
            r = compare(space, ours, theirs, arch, m, amaps, size, dtype, channels_last)
            print("  xautodl's instance patched to our structure (pool BNs, lastact removed):")
            patched_ok = report(f"  {name}, patched", dtype, r, m.zeroed_biases, unmapped)
            passed = patched_ok and patch
        ok &= passed
    if not ok:
        print(
            f"!!! {space}: xautodl's supernet and ours do NOT compute the same function; "
            "see above. Timing them against each other compares different networks."
        )
    return ok


def report(label: str, dtype, r: dict, zeroed: int, structural) -> bool:
    """Print one comparison; True if it is within tolerance and without structural findings."""
    tol = TOL[dtype]
    # float64 must agree everywhere; in float32 the criterion is the logits (alpha
    # gradients are small sums of large cancelling terms: float32 rounding shows there).
    worst = worst_of(r) if dtype == torch.float64 else r["logits"]
    passed = worst <= tol and not structural
    print(
        f"{label}: max rel diff logits {r['logits']:.2e}, alpha grads {r['alpha_grad']:.2e}, "
        f"BN running buffers {r['bn_buffers']:.2e} (tol {tol:.0e}; |logits| <= "
        f"{r['logit_scale']:.3g}); {zeroed} xautodl conv biases zeroed -> "
        + ("PASS" if passed else "FAIL")
    )
    return passed


def describe(space: str, size: dict) -> str:
    """The configuration in words."""
    n = size["N"]
    cells = f"N={n}" if space == "nb201" else f"{3 * n} cells (xautodl N={n})"
    return f"C={size['C']} {cells}, batch {size['batch']}, {size['hw']}x{size['hw']}x3"


# ----------------------------------------------------------------------------------- timing


def batches(size: dict, fmt=torch.contiguous_format):
    """A fixed (train, val) pair of random batches."""
    g = torch.Generator().manual_seed(2)

    def one():
        x = torch.randn(size["batch"], 3, size["hw"], size["hw"], generator=g)
        return x.contiguous(memory_format=fmt), torch.randint(0, NUM_CLASSES, (size["batch"],))

    return one(), one()


def our_stepper(ours: nn.Module, arch, size: dict, channels_last: bool):
    """A closure running one of our first-order search steps."""
    from diffnas.search.darts import DartsSearch

    search = DartsSearch(ours, arch, OUR_CFG)
    search.on_epoch_start(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    train, val = batches(size, fmt)
    return lambda: search.step(train, val)


def their_stepper(network: nn.Module, size: dict):
    """A closure running one iteration of xautodl's DARTS-V1 `search_func`."""
    # get_optim_scheduler(search_model.get_weights(), configs/nas-benchmark/algos/DARTS.config)
    w_optimizer = torch.optim.SGD(
        network.get_weights(), 0.025, momentum=0.9, weight_decay=0.0005, nesterov=True
    )
    a_optimizer = torch.optim.Adam(
        network.get_alphas(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3
    )
    criterion = nn.CrossEntropyLoss()
    (base_inputs, base_targets), (arch_inputs, arch_targets) = batches(size)
    gradient_clip = 5.0

    def step():
        network.train()
        # scheduler.update(None, step / len(loader)): in epoch 0 it re-sets the same lr.
        for group in w_optimizer.param_groups:
            group["lr"] = 0.025
        # update the weights
        w_optimizer.zero_grad()
        _, logits = network(base_inputs)
        base_loss = criterion(logits, base_targets)
        base_loss.backward()
        if gradient_clip > 0:
            torch.nn.utils.clip_grad_norm_(network.parameters(), gradient_clip)
        w_optimizer.step()
        base_prec = logits.data.topk(5, 1)[1]  # obtain_accuracy(..., topk=(1, 5))
        base_loss.item(), base_prec.sum().item()
        # update the architecture-weight
        a_optimizer.zero_grad()
        _, logits = network(arch_inputs)
        arch_loss = criterion(logits, arch_targets)
        arch_loss.backward()
        a_optimizer.step()
        arch_prec = logits.data.topk(5, 1)[1]
        arch_loss.item(), arch_prec.sum().item()

    return step


def time_both(
    space: str, size: dict, steps: int, warmup: int, channels_last: bool, patch: bool
) -> dict:
    """Median s/step of ours and xautodl's, steps alternating (ABBA) in this one process."""
    xa = import_xautodl()
    ours, theirs, arch, m, *_ = build_pair(space, size, torch.float32, channels_last, xa, 0.0)
    if patch and space == "darts":
        patch_like_ours(theirs, m)
    run = {
        "ours": our_stepper(ours, arch, size, channels_last),
        "xautodl": their_stepper(theirs, size),
    }
    for _ in range(warmup):
        for f in run.values():
            f()
    times = {k: [] for k in run}
    for i in range(steps):
        for k in ("ours", "xautodl") if i % 2 == 0 else ("xautodl", "ours"):
            t = time.perf_counter()
            run[k]()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _proc_status_gib(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux) in GiB, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def current_rss_gib() -> float:
    """Resident set size now (Linux /proc), else the peak so far."""
    rss = _proc_status_gib("VmRSS")
    return rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_rss_gib() -> float:
    """This process's peak resident set size. VmHWM belongs to the process's own address space;
    getrusage's ru_maxrss would not do: Linux carries the parent's peak at fork time across the
    exec into the child's ru_maxrss, so every child would report at least the parent's peak."""
    hwm = _proc_status_gib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def memory_one(space: str, impl: str, size: dict, channels_last: bool, patch: bool) -> dict:
    """Peak RSS of one implementation alone (this process builds nothing else, except that the
    patched xautodl DARTS network is made through the weight map, which builds our network too:
    its weights, a few MiB, are freed before the steps)."""
    torch.manual_seed(0)
    if impl == "ours":
        import diffnas.search.darts  # noqa: F401  (imported before the baseline is taken)
        import diffnas.spaces  # noqa: F401
        from diffnas.arch import ArchParameters

        base = current_rss_gib()
        model = build_ours(space, size)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        step = our_stepper(model, ArchParameters(model.arch_shapes()), size, channels_last)
    else:
        xa = import_xautodl()
        base = current_rss_gib()
        if patch and space == "darts":
            ours, theirs, arch, m, *_ = build_pair(space, size, torch.float32, False, xa, 0.0)
            patch_like_ours(theirs, m)
            del ours, arch, m
        else:
            theirs = build_theirs(space, size, xa)
        step = their_stepper(theirs, size)
    for _ in range(3):  # warm-up + 2: the first step allocates optimiser state
        step()
    return {"peak_gib": peak_rss_gib(), "base_gib": base}


# ------------------------------------------------------------------------------------- main


def child(args: list[str]) -> dict:
    """Run this script with `args` in a fresh process; its last stdout line is JSON."""
    cmd = [sys.executable, __file__, *args]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"child {' '.join(args)} failed with status {p.returncode}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    """Check, then time and measure, each space; print the table."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--space", choices=("nb201", "darts", "both"), default="both")
    p.add_argument("--steps", type=int, default=10, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--check-only", action="store_true", help="only the equivalence check")
    p.add_argument("--small", action="store_true", help="tiny sizes (development, quick check)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--check-batch", type=int, default=16, help="batch of the equivalence check")
    p.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="ours in NCHW instead of channels_last (our search default)",
    )
    p.add_argument(
        "--darts-as-is",
        dest="patch",
        action="store_false",
        help="time xautodl's DARTS network as shipped, not patched to the DARTS structure",
    )
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="time a space even if its check failed (rows are marked); still exits 1",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    sizes = SIZES["small" if a.small else "full"]
    for s in sizes.values():
        s["check_batch"] = a.check_batch
    if a.child:
        job, space, *rest = a.child.split(":")
        if job == "time":
            out = time_both(space, sizes[space], a.steps, a.warmup, a.channels_last, a.patch)
        else:
            out = memory_one(space, rest[0], sizes[space], a.channels_last, a.patch)
        print(json.dumps(out))
        return

    xa = import_xautodl()
    spaces = ("nb201", "darts") if a.space == "both" else (a.space,)
    print(
        f"diffnas vs xautodl 1.0.0 | threads={torch.get_num_threads()} "
        f"ours channels_last={a.channels_last} | {'small' if a.small else 'full'} sizes"
    )
    passed = {s: check_space(s, sizes[s], a.channels_last, xa, a.patch) for s in spaces}
    if not a.check_only:
        common = ["--steps", str(a.steps), "--warmup", str(a.warmup)]
        common += ["--threads", str(a.threads)] + (
            [] if a.channels_last else ["--no-channels-last"]
        )
        common += ["--small"] if a.small else []
        common += [] if a.patch else ["--darts-as-is"]
        rows = []
        for s in spaces:
            if not passed[s] and not a.allow_mismatch:
                print(f"\n{s}: not timed, its equivalence check failed (--allow-mismatch to force)")
                continue
            print(f"\ntiming {s} ({a.steps} steps each, alternating) ...", flush=True)
            t = child(["--child", f"time:{s}", *common])
            mem = {k: child(["--child", f"mem:{s}:{k}", *common]) for k in ("ours", "xautodl")}
            rows.append((s, t, mem))
        print_table(rows, passed, a)
    if not all(passed.values()):
        failed = ", ".join(s for s, ok in passed.items() if not ok)
        print(f"\nFAILED: equivalence check failed for: {failed}")
        sys.exit(1)


def print_table(rows, passed, a) -> None:
    """The results table and the xautodl/ours ratios."""
    if not rows:
        return
    print(f"\nfirst-order search step (alpha + weight step), CPU threads={a.threads or 'default'}")
    head = f"{'space':<7}{'impl':<9}{'median s/step':>14}{'peak RSS GiB':>14}{'above base GiB':>16}"
    print(head)
    for s, t, mem in rows:
        mark = "" if passed[s] else "   <-- NOT EQUIVALENT (check failed)"
        if s == "darts" and a.patch:
            mark = mark or "   (xautodl patched to the DARTS structure: pool BNs, no lastact)"
        for k in ("ours", "xautodl"):
            d = mem[k]["peak_gib"] - mem[k]["base_gib"]
            print(f"{s:<7}{k:<9}{t[k]:>14.4f}{mem[k]['peak_gib']:>14.3f}{d:>16.3f}{mark}")
        dx = mem["xautodl"]["peak_gib"] - mem["xautodl"]["base_gib"]
        do = mem["ours"]["peak_gib"] - mem["ours"]["base_gib"]
        print(
            f"{s:<7}{'x/ours':<9}{t['xautodl'] / t['ours']:>13.2f}x"
            f"{mem['xautodl']['peak_gib'] / mem['ours']['peak_gib']:>13.2f}x"
            + (f"{dx / do:>15.2f}x" if do > 0 else f"{'n/a':>16}")
            + mark
        )
    print("goal: x/ours >= 3 for time, >= 2 for memory")


if __name__ == "__main__":
    main()
