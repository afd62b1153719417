"""Collapse diagnostics: how much of the derived cell is parameter-free, whether it still
connects its input to its output, and how undecided each edge's weights still are. DARTS'
best-known failure mode is a cell that fills up with skip connections, pooling or `none` as the
search goes on; a search whose alphas never left uniform derives a cell from noise."""

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


def cell_label(kind: str) -> str:
    """How a cell type is named in messages: "normal cell", "reduce cell", or "cell"."""
    return kind if kind.endswith("cell") else f"{kind} cell"


def _reaches(edges, inputs, outputs) -> bool:
    """Does a path of `edges` ((src, dst) with src < dst) lead from an input to an output?"""
    live = set(inputs)
    for src, dst in sorted(edges, key=lambda e: e[1]):
        if src in live:
            live.add(dst)
    return bool(live & set(outputs))


def disconnected_cells(genotype) -> list[str]:
    """The cell types of a genotype in which no path of non-`none` ops leads from an input to
    the output: such a cell outputs a constant (NB201 scores it 10 %)."""
    if isinstance(genotype, NB201Genotype):
        edges = [e for e, op in zip(genotype.EDGES, genotype.ops, strict=True) if op != "none"]
        return [] if _reaches(edges, {0}, {3}) else ["cell"]
    if isinstance(genotype, Genotype):
        out = []
        for kind in ("normal", "reduce"):
            pairs, concat = getattr(genotype, kind), getattr(genotype, f"{kind}_concat")
            edges = [(j, 2 + i // 2) for i, (op, j) in enumerate(pairs) if op != "none"]
            if not _reaches(edges, {0, 1}, set(concat)):
                out.append(kind)
        return out
    return []  # recurrent cells: every node has an op on a path from the input


def edge_entropy(weights: torch.Tensor) -> list[float]:
    """Entropy (nats) of each edge's weights normalised to sum 1; 0 for an all-zero edge.
    Uniform weights over k ops give log(k); a decided edge gives 0."""
    out = []
    for row in weights.detach().double().cpu():
        total = row.sum().item()
        p = [v / total for v in row.tolist() if v > 0] if total > 0 else []
        out.append(-sum(v * math.log(v) for v in p))
    return out


def entropy_ratio(weights: torch.Tensor) -> float:
    """Mean over edges of entropy / log(number of live ops): 1 for uniform weights on every
    edge, 0 for decided edges. Edges with fewer than two live ops (pruned) are left out."""
    ratios = []
    for row, h in zip(weights.detach().cpu(), edge_entropy(weights), strict=True):
        live = int((row > 0).sum())
        if live > 1:
            ratios.append(h / math.log(live))
    return sum(ratios) / len(ratios) if ratios else 0.0


def collapse_diagnostics(genotype, weights: dict[str, torch.Tensor]) -> dict:
    """Per cell type: the derived cell's parameter-free ops (count and which), every edge's
    weight entropy and their mean share of the uniform entropy; the disconnected cell types."""
    ops, free = cell_ops(genotype), parameter_free(genotype)
    return {
        "param_free_ops": {k: sum(o in free for o in v) for k, v in ops.items()},
        "cell_ops": {k: len(v) for k, v in ops.items()},
        "param_free_kinds": {k: dict(Counter(o for o in v if o in free)) for k, v in ops.items()},
        "edge_entropy": {k: edge_entropy(w) for k, w in weights.items()},
        "entropy_ratio": {k: entropy_ratio(w) for k, w in weights.items()},
        "disconnected": disconnected_cells(genotype),
    }


def search_warnings(record: dict, collapse_warn: float, uniform_warn: float) -> list[str]:
    """Every warning an epoch record calls for: parameter-free collapse (`collapse_warning`),
    a derived cell with no path from input to output, weights still near uniform."""
    out = [w for w in [collapse_warning(record, collapse_warn)] if w]
    epoch = record["epoch"] + 1
    for kind in record.get("disconnected", []):
        out.append(
            f"warning: epoch {epoch}: the derived {cell_label(kind)} has no path of non-`none` "
            "ops from its input to its output: it computes a constant (10 % on NB201). Its "
            "`none` ops won; use another selection (`diffnas select RUN_DIR`) or method."
        )
    flat = {k: r for k, r in record.get("entropy_ratio", {}).items() if r > uniform_warn}
    if flat:
        shares = ", ".join(f"{cell_label(k)} at {r:.3%}" for k, r in flat.items())
        out.append(
            f"warning: epoch {epoch}: the architecture weights are still near uniform (mean edge "
            f"entropy of the {shares} of the uniform maximum; search.uniform_warn = "
            f"{uniform_warn}): the derived cell rests on tiny differences. Search longer, raise "
            "search.alpha_lr, or compare with random search."
        )
    return out


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
        f"{record['cell_ops'][k]} ops of the derived {cell_label(k)} ({kinds}): the search may be "
        f"collapsing. Consider fewer epochs, perturbation-based selection, or a regulariser."
    )
