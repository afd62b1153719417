"""Collapse diagnostics: how much of the derived cell is parameter-free, and how undecided each
edge's weights still are. DARTS' best-known failure mode is a cell that fills up with
skip connections, pooling or `none` as the search goes on."""

from __future__ import annotations

import math
from collections import Counter

import torch

from diffnas.ops.cnn import PARAMETER_FREE
from diffnas.spaces.genotypes import Genotype, NB201Genotype, PairRNNGenotype, RNNGenotype
from diffnas.spaces.pair_rnn import PAIR_PARAMETER_FREE


def cell_ops(genotype) -> dict[str, list[str]]:
    """The ops of each cell type of a genotype."""
    if isinstance(genotype, NB201Genotype):
        return {"cell": list(genotype.ops)}
    if isinstance(genotype, Genotype):
        return {
            "normal": [op for op, _ in genotype.normal],
            "reduce": [op for op, _ in genotype.reduce],
        }
    if isinstance(genotype, RNNGenotype):
        return {"recurrent": [op for op, _ in genotype.recurrent]}
    if isinstance(genotype, PairRNNGenotype):
        return {"recurrent": list(genotype.ops)}
    raise TypeError(f"no collapse diagnostics for {type(genotype).__name__}")


def parameter_free(genotype) -> frozenset[str]:
    """The op names of the genotype's space that have no weights."""
    if isinstance(genotype, RNNGenotype):
        return frozenset()  # every DARTS RNN node has its own W_i
    if isinstance(genotype, PairRNNGenotype):
        return PAIR_PARAMETER_FREE
    return PARAMETER_FREE


def edge_entropy(weights: torch.Tensor) -> list[float]:
    """Entropy (nats) of each edge's weights normalised to sum 1; 0 for an all-zero edge.
    Uniform weights over k ops give log(k); a decided edge gives 0."""
    out = []
    for row in weights.detach().double().cpu():
        total = row.sum().item()
        p = [v / total for v in row.tolist() if v > 0] if total > 0 else []
        out.append(-sum(v * math.log(v) for v in p))
    return out


def collapse_diagnostics(genotype, weights: dict[str, torch.Tensor]) -> dict:
    """Per cell type: the derived cell's parameter-free ops (count and which), and every edge's
    weight entropy."""
    ops, free = cell_ops(genotype), parameter_free(genotype)
    return {
        "param_free_ops": {k: sum(o in free for o in v) for k, v in ops.items()},
        "cell_ops": {k: len(v) for k, v in ops.items()},
        "param_free_kinds": {k: dict(Counter(o for o in v if o in free)) for k, v in ops.items()},
        "edge_entropy": {k: edge_entropy(w) for k, w in weights.items()},
    }


def collapse_warning(record: dict, threshold: float) -> str | None:
    """A warning when parameter-free ops exceed `threshold` of a derived cell's ops. Reduction
    cells are not checked: even the published DARTS cells hold only pooling and skips there."""
    worst = None
    for k, n in record["param_free_ops"].items():
        if k == "reduce":
            continue
        share = n / max(record["cell_ops"][k], 1)
        if share > threshold and (worst is None or share > worst[1]):
            worst = (k, share, n)
    if worst is None:
        return None
    k, _, n = worst
    kinds = ", ".join(f"{o} x{c}" for o, c in record["param_free_kinds"][k].items())
    return (
        f"warning: epoch {record['epoch'] + 1}: parameter-free ops fill {n} of "
        f"{record['cell_ops'][k]} ops of the derived {k} cell ({kinds}): the search may be "
        f"collapsing. Consider fewer epochs, perturbation-based selection, or a regulariser."
    )
