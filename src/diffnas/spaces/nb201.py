"""The NAS-Bench-201 cell space: 4 nodes, 6 edges, 5 ops, in the NB201 macro network.

Macro network (as in the NB201 authors' code): stem conv3x3 + BN, three stages of N cells with
C, 2C, 4C channels, a residual reduction block between stages, BN + ReLU, global pooling, linear.
"""

from __future__ import annotations

import torch
from torch import nn

from diffnas.ops import ReLUConvBN, make_op
from diffnas.spaces.genotypes import NB201_OPS, NB201Genotype
from diffnas.spaces.mixed import MixedOp, StateCache, active_mask, sum_or_zeros

EDGES = NB201Genotype.EDGES  # (from, to) in arch-string order; row k of the alphas is edge k


class ResNetBasicBlock(nn.Module):
    """The stride-2 residual block between NB201 stages."""

    def __init__(self, C_in, C_out, stride=2):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, affine=True)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine=True)
        # ceil_mode makes odd sizes match the stride-2 conv; even sizes are unaffected.
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, 2, ceil_mode=True), nn.Conv2d(C_in, C_out, 1, bias=False)
        )

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class SearchCell(nn.Module):
    """Node j = sum over i<j of MixedOp_{i->j}(node i); the output is node 3."""

    def __init__(self, C, op_names=NB201_OPS, node_bn=False):
        super().__init__()
        self.edges = nn.ModuleList(MixedOp(C, C, 1, op_names) for _ in EDGES)
        # DARTS-PRIME's "statebn": a non-affine BN after each node's sum.
        self.node_bns = nn.ModuleList(
            nn.BatchNorm2d(C, affine=False) if node_bn else nn.Identity() for _ in range(3)
        )

    def forward(self, x, weights, active):
        nodes = [x]
        caches = [StateCache(x)]
        for j in range(1, 4):
            terms = [
                self.edges[k](nodes[i], weights[k], active[k], caches[i])
                for k, (i, to) in enumerate(EDGES)
                if to == j
            ]
            nodes.append(self.node_bns[j - 1](sum_or_zeros(terms, x, x.shape, fresh=True)))
            caches.append(StateCache(nodes[-1]))
        return nodes[-1]


class FixedCell(nn.Module):
    """A discrete NB201 cell built from a genotype (for final training)."""

    def __init__(self, C, genotype: NB201Genotype):
        super().__init__()
        self.ops = genotype.ops
        self.edges = nn.ModuleList(make_op(op, C, C, 1, affine=True) for op in genotype.ops)

    def forward(self, x):
        nodes = [x]
        for j in range(1, 4):
            terms = [
                self.edges[k](nodes[i])
                for k, (i, to) in enumerate(EDGES)
                if to == j and self.ops[k] != "none"
            ]
            nodes.append(sum_or_zeros(terms, x, x.shape))
        return nodes[-1]


class _Macro(nn.Module):
    """Stem, 3 stages of N cells with residual reduction blocks, head."""

    def __init__(self, make_cell, C, N, in_channels, num_classes):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C)
        )
        layers, C_prev = [], C
        for stage, C_cur in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                layers.append(ResNetBasicBlock(C_prev, C_cur, 2))
            layers.extend(make_cell(C_cur) for _ in range(N))
            C_prev = C_cur
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def head(self, x):
        return self.classifier(self.pool(self.lastact(x)).flatten(1))


class NB201SuperNet(_Macro):
    """The NB201 supernet. forward(x, weights) with weights = {"cell": [6, n_ops]}."""

    def __init__(
        self,
        C=16,
        N=5,
        in_channels=3,
        num_classes=10,
        op_names=NB201_OPS,
        node_bn=False,
        derive_none=True,
    ):
        self.op_names = tuple(op_names)
        self.derive_none = derive_none
        super().__init__(
            lambda c: SearchCell(c, self.op_names, node_bn), C, N, in_channels, num_classes
        )

    def arch_shapes(self) -> dict[str, tuple[int, int]]:
        """Shapes of the architecture weights the forward expects."""
        return {"cell": (len(EDGES), len(self.op_names))}

    def forward(self, x, weights: dict[str, torch.Tensor]):
        w = weights["cell"]
        active = active_mask(w)
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, w, active) if isinstance(cell, SearchCell) else cell(x)
        return self.head(x)

    def genotype(self, weights: dict[str, torch.Tensor]) -> NB201Genotype:
        """The NB201 derivation rule: argmax op per edge (`none` included, as the NB201 code
        does, unless `derive_none` is false); an edge whose weights are all zero (every op
        pruned) is `none`."""
        w = weights["cell"]
        ranked = w
        if not self.derive_none and "none" in self.op_names:
            ranked = w.clone()
            ranked[:, self.op_names.index("none")] = -torch.inf
        idx = ranked.argmax(dim=-1).tolist()
        dead = (w.amax(dim=-1) <= 0).tolist()
        return NB201Genotype(
            tuple("none" if d else self.op_names[i] for i, d in zip(idx, dead, strict=True))
        )

    def project(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The derived genotype as 0/1 edge weights (one-hot rows; all-zero for a `none` edge
        when the space has no `none` op)."""
        w = weights["cell"]
        g = self.genotype(weights)
        out = torch.zeros_like(w)
        for e, op in enumerate(g.ops):
            if op in self.op_names:
                out[e, self.op_names.index(op)] = 1.0
        return {"cell": out}


class NB201Net(_Macro):
    """The final NB201 network of one genotype (all cells share it)."""

    def __init__(self, genotype: NB201Genotype, C=16, N=5, in_channels=3, num_classes=10):
        super().__init__(lambda c: FixedCell(c, genotype), C, N, in_channels, num_classes)
        self.genotype = genotype

    def forward(self, x, with_aux: bool = False):
        """Logits; with `with_aux`, (logits, None): the NB201 network has no auxiliary head."""
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        logits = self.head(x)
        return (logits, None) if with_aux else logits
