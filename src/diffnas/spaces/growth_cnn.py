"""Growth of the DARTS CNN search cell by one intermediate node (network morphism).

The morphism (ours; the paper's formulas are not known, see docs/METHODS.md section 5). A growing
DARTS supernet concatenates ALL intermediate nodes into a cell's output (`space.multiplier =
space.steps`, the DARTS default 4/4), and growth keeps it so: node k+1 joins the concat. Then
the new node's channels are appended at the end of the cell's output, and everything that reads
that output gets zero weights on exactly those channels:

- the next cell's `preprocess1` and the cell after it's `preprocess0` (a 1x1 conv, or the two
  1x1 convs of a FactorizedReduce after a reduction cell) gain zero input channels;
- after the last cell, the classifier gains zero input columns;
- inside the cell nothing reads the new node yet (it is the last node).

So the network's function is unchanged whatever the new node computes: its edges are ordinary,
freshly initialised mixed ops with fresh alphas, and it starts learning as soon as the first
gradient step makes those zero weights non-zero (their gradient is the new node's output, which
is not zero). We chose this over a zero-output new node (every candidate op ends in a non-affine BN,
so no op outputs zero at birth; it would need an extra gate per node, which the fixed-size
supernet does not have) and over keeping `multiplier` fixed with a shifted concat window (the
oldest concatenated node would leave the output: not function-preserving). The new node's mixed ops
are exactly the ops a DARTS cell of that size would have, so a grown supernet has the same
modules, shapes and genotype format as a fixed-size one of the same number of nodes.

Why BN does not break it: the preprocess convs are ReLU -> conv -> BN; zero input channels leave
the conv output bit-for-bit the sum it was (plus exact zeros), so the BN sees the same batch in
training and uses the same running statistics in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from diffnas.spaces.darts_cnn import DartsSuperNet, edge_list
from diffnas.spaces.growth import Growth, forked_rng, widen_input
from diffnas.spaces.mixed import MixedOp


def growth_blocker(model: DartsSuperNet) -> str | None:
    """Why `model` cannot grow a node (None: it can)."""
    if model.multiplier != model.steps:
        return (
            f"its cells concatenate the last {model.multiplier} of {model.steps} nodes; growth "
            "needs every node in the output (set space.multiplier = space.steps)"
        )
    for kind, ops in model.edge_ops.items():
        if len(set(ops)) != 1:
            return (
                f"its {kind} edges have different candidate-op sets (the RobustDARTS spaces S1-S4 "
                "define ops for 14 fixed edges), so a new edge has no defined op set"
            )
    return None


def _node_channels(cell) -> int:
    """C of a search cell: the output channels of its preprocessing, i.e. of every node."""
    return cell.preprocess1[1].out_channels


def _input_convs(pre: nn.Module) -> list[nn.Conv2d]:
    """The convs of a preprocessing module that read the previous cell's output."""
    if isinstance(pre, nn.Sequential):  # ReLUConvBN
        return [m for m in pre if isinstance(m, nn.Conv2d)]
    return [pre.conv_1, pre.conv_2]  # FactorizedReduce


def _uses_channels_last(model: DartsSuperNet) -> bool:
    w = model.stem[0].weight
    return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def grow_supernet(model: DartsSuperNet, seed: int | None = None) -> Growth:
    """Add intermediate node k+1 to every cell of `model`, in place, preserving its function."""
    reason = growth_blocker(model)
    if reason is not None:
        raise ValueError(f"this DARTS supernet cannot grow: {reason}")
    ref = model.classifier.weight
    channels_last = _uses_channels_last(model)
    node = model.steps  # index of the new node among the intermediate ones
    new_edges = [(j, node + 2) for j in range(node + 2)]
    growth = Growth(nodes=node + 1)
    with forked_rng(seed):
        for cell in model.cells:
            C = _node_channels(cell)
            kind = "reduce" if cell.reduction else "normal"
            ops = model.edge_ops[kind][0]
            added = [
                MixedOp(C, C, 2 if cell.reduction and j < 2 else 1, ops, pool_bn=True)
                for j, _ in new_edges
            ]
            node_bn = isinstance(cell.node_bns[0], nn.BatchNorm2d)
            added.append(nn.BatchNorm2d(C, affine=False) if node_bn else nn.Identity())
            for m in added:
                m.to(ref.device, ref.dtype)
                if channels_last:
                    m.to(memory_format=torch.channels_last)
                growth.added.extend(m.parameters())
            cell.ops.extend(added[:-1])
            cell.node_bns.append(added[-1])
            cell.steps += 1
            cell.multiplier += 1
            cell.edges = edge_list(cell.steps)
    # Readers of each cell's output: the next cell's preprocess1, the one after's preprocess0,
    # and the classifier after the last cell.
    cells = list(model.cells)
    for i, cell in enumerate(cells):
        extra = _node_channels(cell)
        readers = []
        if i + 1 < len(cells):
            readers += _input_convs(cells[i + 1].preprocess1)
        if i + 2 < len(cells):
            readers += _input_convs(cells[i + 2].preprocess0)
        if i == len(cells) - 1:
            readers.append(model.classifier)
        for m in readers:
            widen_input(m, extra, growth)
    for kind in model.edge_ops:
        model.edge_ops[kind].extend([model.edge_ops[kind][0]] * len(new_edges))
    model.steps += 1
    model.multiplier += 1
    return growth
