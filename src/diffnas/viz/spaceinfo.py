"""Names of the edges and candidate ops of a space's cells, from the spaces' public constants."""

from __future__ import annotations

from diffnas.ops.cnn import PARAMETER_FREE
from diffnas.spaces.darts_cnn import edge_list
from diffnas.spaces.genotypes import (
    DARTS_OPS,
    DARTS_RNN_OPS,
    NB201_OPS,
    PAIR_RNN_OPS,
    NB201Genotype,
)
from diffnas.spaces.robust_darts import ROBUST_DARTS_OP_SETS

DARTS_INPUTS = ("c_{k-2}", "c_{k-1}")
# The candidate ops of the spaces whose edges all share one set (DARTS' is the default).
SPACE_OPS = {"nb201": NB201_OPS, "darts_rnn": DARTS_RNN_OPS, "pair_rnn": PAIR_RNN_OPS}


def is_parameter_free(op: str | None) -> bool:
    """Whether `op` has no weights (skip, pooling, none, noise): the ops a collapse fills up."""
    return op is None or op in PARAMETER_FREE


def darts_state(state: int) -> str:
    """Name of a DARTS cell state: the inputs c_{k-2}, c_{k-1}, then intermediate nodes 0, 1..."""
    return DARTS_INPUTS[state] if state < 2 else str(state - 2)


def darts_steps(n_edges: int) -> int | None:
    """The intermediate nodes of a DARTS cell with `n_edges` edges (node i has i + 2 inputs)."""
    for steps in range(1, 32):
        if len(edge_list(steps)) == n_edges:
            return steps
    return None


def edge_labels(space: str | None, n_edges: int) -> list[str]:
    """One label per edge, in the row order of the architecture weights."""
    if space == "nb201" and n_edges == len(NB201Genotype.EDGES):
        return [f"{a}\u2192{b}" for a, b in NB201Genotype.EDGES]
    if space == "pair_rnn":
        return [f"node {k}" for k in range(1, n_edges + 1)]
    if space == "darts_rnn":  # node i's edges from j = 0..i-1, node by node
        labels = [f"{j}\u2192{i}" for i in range(1, n_edges + 1) for j in range(i)]
        return labels[:n_edges]
    steps = darts_steps(n_edges) if space != "nb201" else None
    if steps is None:
        return [f"edge {e}" for e in range(n_edges)]
    return [f"{darts_state(j)}\u2192{darts_state(i)}" for j, i in edge_list(steps)]


def edge_ops(space: str | None, cell: str, n_edges: int, n_ops: int) -> list[list[str]]:
    """The candidate op names of every edge of `cell`, `n_ops` of them per edge."""
    if space in ROBUST_DARTS_OP_SETS and cell in ROBUST_DARTS_OP_SETS[space]:
        sets = ROBUST_DARTS_OP_SETS[space][cell]
    else:
        names = SPACE_OPS.get(space, DARTS_OPS if space else ())
        sets = [list(names)] * n_edges
    out = []
    for e in range(n_edges):
        ops = list(sets[e]) if e < len(sets) else []
        # Activations without a use for `none` (clip) build every edge without it.
        if len(ops) == n_ops + 1 and "none" in ops:
            ops.remove("none")
        out.append(ops if len(ops) == n_ops else [f"op {o}" for o in range(n_ops)])
    return out
