"""The DARTS CNN space: normal and reduction cells of 4 intermediate nodes and 14 edges.

Also serves the RobustDARTS reductions S1-S4, which only change the candidate ops of each edge.
Row e of `weights["normal"]` / `weights["reduce"]` holds the weights of edge e, edges enumerated
node by node (node i has inputs 0..i+1), column o the weight of the edge's o-th candidate op.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn

from diffnas.ops import FactorizedReduce, ReLUConvBN
from diffnas.spaces.genotypes import DARTS_OPS, Genotype
from diffnas.spaces.mixed import MixedOp, StateCache, active_mask, sum_or_zeros


def edge_list(steps: int) -> list[tuple[int, int]]:
    """(input, node) per edge in DARTS order; inputs 0,1 are the cell inputs, node i is i+2."""
    return [(j, i + 2) for i in range(steps) for j in range(i + 2)]


def cell_preprocess(
    C_pp, C_p, C, reduction_prev: bool, affine: bool
) -> tuple[nn.Module, nn.Module]:
    """The modules that bring a cell's two inputs to C channels (and, after a reduction cell,
    the older input to the new resolution)."""
    if reduction_prev:
        p0 = FactorizedReduce(C_pp, C, affine=affine)
    else:
        p0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=affine)
    return p0, ReLUConvBN(C_p, C, 1, 1, 0, affine=affine)


class SearchCell(nn.Module):
    """A DARTS search cell: every node sums mixed edges from all earlier states."""

    def __init__(
        self, steps, multiplier, C_pp, C_p, C, reduction, reduction_prev, edge_ops, node_bn=False
    ):
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = cell_preprocess(C_pp, C_p, C, reduction_prev, False)
        self.steps, self.multiplier = steps, multiplier
        self.edges = edge_list(steps)
        self.ops = nn.ModuleList(
            MixedOp(C, C, 2 if reduction and j < 2 else 1, ops, pool_bn=True)
            for (j, _), ops in zip(self.edges, edge_ops, strict=True)
        )
        # DARTS-PRIME's "statebn": a non-affine BN after each node's sum (its edge weights need
        # not sum to 1).
        self.node_bns = nn.ModuleList(
            nn.BatchNorm2d(C, affine=False) if node_bn else nn.Identity() for _ in range(steps)
        )

    def forward(self, s0, s1, weights, active):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        B, C, H, W = states[1].shape
        shape = (B, C, (H + 1) // 2, (W + 1) // 2) if self.reduction else (B, C, H, W)
        caches = [StateCache(h) for h in states]
        e = 0
        for node_bn in self.node_bns:
            terms = []
            for h, cache in zip(states, caches, strict=True):
                terms.append(self.ops[e](h, weights[e], active[e], cache))
                e += 1
            states.append(node_bn(sum_or_zeros(terms, s1, shape, fresh=True)))
            caches.append(StateCache(states[-1]))
        return torch.cat(states[-self.multiplier :], dim=1)


class DartsSuperNet(nn.Module):
    """The DARTS search network. forward(x, {"normal": [E, k], "reduce": [E, k]})."""

    def __init__(
        self,
        C: int = 16,
        layers: int = 8,
        in_channels: int = 3,
        num_classes: int = 10,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        edge_ops: dict[str, Sequence[Sequence[str]]] | None = None,
        node_bn: bool = False,
    ):
        super().__init__()
        n_edges = len(edge_list(steps))
        if edge_ops is None:
            edge_ops = {k: [DARTS_OPS] * n_edges for k in ("normal", "reduce")}
        for kind in ("normal", "reduce"):
            ops = edge_ops[kind]
            if len(ops) != n_edges or len({len(o) for o in ops}) != 1:
                raise ValueError(
                    f"{kind}: need {n_edges} edges with equally many candidate ops each"
                )
        self.edge_ops = {k: [tuple(o) for o in v] for k, v in edge_ops.items()}
        self.steps, self.multiplier = steps, multiplier
        C_cur = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_cur, 3, padding=1, bias=False), nn.BatchNorm2d(C_cur)
        )
        C_pp, C_p, C_cur = C_cur, C_cur, C
        cells, reduction_prev = [], False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_cur *= 2
            kind = "reduce" if reduction else "normal"
            cells.append(
                SearchCell(
                    steps,
                    multiplier,
                    C_pp,
                    C_p,
                    C_cur,
                    reduction,
                    reduction_prev,
                    self.edge_ops[kind],
                    node_bn,
                )
            )
            reduction_prev = reduction
            C_pp, C_p = C_p, multiplier * C_cur
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def arch_shapes(self) -> dict[str, tuple[int, int]]:
        """Shapes of the architecture weights the forward expects."""
        return {k: (len(v), len(v[0])) for k, v in self.edge_ops.items()}

    # The growth interface (diffnas.spaces.growth); the morphism lives in growth_cnn.
    def num_nodes(self) -> int:
        """Intermediate nodes per cell."""
        return self.steps

    def growth_blocker(self) -> str | None:
        """Why this supernet cannot grow a node (None: it can)."""
        from diffnas.spaces.growth_cnn import growth_blocker

        return growth_blocker(self)

    def grow(self, seed: int | None = None):
        """Add one intermediate node to every cell, function-preserving (see growth_cnn)."""
        from diffnas.spaces.growth_cnn import grow_supernet

        return grow_supernet(self, seed)

    def forward(self, x, weights: dict[str, torch.Tensor]):
        active = {k: active_mask(w) for k, w in weights.items()}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            kind = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, weights[kind], active[kind])
        return self.classifier(self.pool(s1).flatten(1))

    def genotype(self, weights: dict[str, torch.Tensor]) -> Genotype:
        """The DARTS rule: per node the top-2 inputs by strongest non-`none` op, then that op."""
        parsed = {k: derive_cell(weights[k], self.edge_ops[k], self.steps) for k in weights}
        concat = list(range(2 + self.steps - self.multiplier, self.steps + 2))
        return Genotype(parsed["normal"], concat, parsed["reduce"], concat)

    def project(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The derived genotype as 0/1 edge weights: per node its two kept edges, one-hot on
        their chosen op; every other edge all zero."""
        g = self.genotype(weights)
        genes = {"normal": g.normal, "reduce": g.reduce}
        return {
            k: project_cell(genes[k], self.edge_ops[k], self.steps, w) for k, w in weights.items()
        }


def project_cell(gene, edge_ops, steps: int, like: torch.Tensor) -> torch.Tensor:
    """A derived cell (list of (op, input) per node, two per node) as 0/1 edge weights."""
    out = torch.zeros_like(like)
    edges = edge_list(steps)
    for k, (op, j) in enumerate(gene):
        e = edges.index((j, k // 2 + 2))
        out[e, edge_ops[e].index(op)] = 1.0
    return out


def derive_cell(w: torch.Tensor, edge_ops, steps: int, k: int = 2) -> list[tuple[str, int]]:
    """Keep, for every node, the k incoming edges whose best non-none weight is largest.

    As in the original code: edges are listed strongest first, and ties (between edges or ops)
    go to the earlier one.
    """
    w = w.detach().double().cpu().tolist()
    edges = edge_list(steps)
    gene = []
    for node in range(2, steps + 2):
        best = {}  # input -> (weight, op) of its strongest non-none op
        for e, (j, to) in enumerate(edges):
            if to == node:
                ops = [o for o, name in enumerate(edge_ops[e]) if name != "none"]
                o = max(ops, key=lambda o: w[e][o])  # max keeps the first of equal weights
                best[j] = (w[e][o], edge_ops[e][o])
        for j in sorted(best, key=lambda j: -best[j][0])[:k]:
            gene.append((best[j][1], j))
    return gene


def random_genotype(rng: random.Random, steps: int = 4, ops: Sequence[str] = DARTS_OPS) -> Genotype:
    """A uniformly random DARTS-space genotype: per node two distinct inputs, each with a random
    op other than `none` (the cells the DARTS rule can derive)."""
    choices = [o for o in ops if o != "none"]

    def cell():
        return [
            (rng.choice(choices), j)
            for node in range(steps)
            for j in sorted(rng.sample(range(node + 2), 2))
        ]

    concat = list(range(2, steps + 2))
    return Genotype(cell(), concat, cell(), concat)
