"""DARTS-PT's decisions: score every candidate removal by a validation pass, then keep the op
whose removal hurts most, or drop the input edge whose removal hurts least.

Each score is one pass over the validation batches without autograd. By default batch norm
normalises with each batch's statistics, as the reference code evaluates (train mode under
no_grad), but here nothing of the model changes: running statistics are neither read nor
updated (`batch_statistics`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.runs.config import ConfigError
from diffnas.select.projection import Projection, without
from diffnas.spaces.darts_cnn import DartsSuperNet, edge_list
from diffnas.spaces.modes import batch_statistics, eval_mode
from diffnas.spaces.nb201 import EDGES as NB201_EDGES
from diffnas.spaces.nb201 import NB201SuperNet

Batch = tuple[torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# What a space offers to decide
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Per cell type: each edge's (input, node) and candidate op names; `node_inputs` is the
    number of inputs a node keeps after topology selection (None: no topology selection)."""

    edges: dict[str, list[tuple[int, int]]]
    ops: dict[str, list[tuple[str, ...]]]
    node_inputs: int | None

    def nodes_to_decide(self, kind: str) -> list[int]:
        """The nodes of `kind` with more inputs than they keep, in order."""
        if self.node_inputs is None:
            return []
        nodes = sorted({to for _, to in self.edges[kind]})
        return [n for n in nodes if len(self.in_edges(kind, n)) > self.node_inputs]

    def in_edges(self, kind: str, node: int) -> list[int]:
        """The edges into `node`, in order."""
        return [e for e, (_, to) in enumerate(self.edges[kind]) if to == node]

    @property
    def op_steps(self) -> int:
        """Op decision steps: one edge of every cell type per step."""
        return max(len(v) for v in self.edges.values())

    @property
    def node_steps(self) -> int:
        """Node decision steps: one node of every cell type per step."""
        return max(len(self.nodes_to_decide(k)) for k in self.edges)


def space_layout(model: nn.Module) -> Layout:
    """The layout of a DARTS-space (incl. S1-S4) or NB201 supernet."""
    if isinstance(model, DartsSuperNet):
        edges = edge_list(model.steps)
        return Layout(
            {k: edges for k in model.edge_ops},
            {k: list(v) for k, v in model.edge_ops.items()},
            node_inputs=2,
        )
    if isinstance(model, NB201SuperNet):
        return Layout(
            {"cell": list(NB201_EDGES)}, {"cell": [model.op_names] * len(NB201_EDGES)}, None
        )
    raise ConfigError(
        f"select.method = 'perturbation' supports the DARTS CNN and NB201 supernets (scored by "
        f"validation accuracy), not {type(model).__name__}; use --method magnitude"
    )


# ---------------------------------------------------------------------------------------------
# Validation passes
# ---------------------------------------------------------------------------------------------


def score(
    model: nn.Module, weights: dict[str, torch.Tensor], batches: Sequence[Batch], bn: str = "train"
) -> tuple[float, float]:
    """(accuracy in %, mean loss) of the supernet with edge weights `weights` over `batches`,
    without autograd; `bn` is `train` (batch statistics) or `eval` (running statistics)."""
    context = batch_statistics(model) if bn == "train" else eval_mode(model)
    # no_grad, not inference_mode: ops cache tensors (AvgPool3x3's scale) that later tuning
    # steps use under autograd, which inference tensors would forbid.
    with context, torch.no_grad():
        correct, loss_sum, n = 0, 0.0, 0
        for x, y in batches:
            logits = model(x, weights)
            # Sums stay on the device: one sync per pass, not per batch.
            correct = correct + (logits.argmax(-1) == y).sum()
            loss_sum = loss_sum + F.cross_entropy(logits.double(), y, reduction="sum")
            n += len(y)
    if n == 0:
        raise ValueError("no validation batches to score the supernet on")
    return 100.0 * float(correct) / n, float(loss_sum) / n


def _value(c: dict, criterion: str) -> float:
    """How well the supernet does without a candidate: higher is better."""
    return c["acc"] if criterion == "acc" else -c["loss"]


def most_missed(candidates: list[dict], criterion: str) -> int:
    """The candidate whose removal hurts most (lowest acc / highest loss); the first on ties."""
    return min(range(len(candidates)), key=lambda i: _value(candidates[i], criterion))


def least_missed(candidates: list[dict], criterion: str) -> int:
    """The candidate whose removal hurts least (highest acc / lowest loss); the last on ties,
    as in the reference code (so earlier inputs are kept, like the DARTS rule's tie-break)."""
    best = max(_value(c, criterion) for c in candidates)
    return max(i for i, c in enumerate(candidates) if _value(c, criterion) == best)


# ---------------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------------


class Perturbation:
    """The decisions of DARTS-PT on one supernet; the projection is set on `arch`."""

    def __init__(self, model, arch, batches: Sequence[Batch], cfg, seed: int):
        self.model, self.arch, self.batches, self.cfg, self.seed = model, arch, batches, cfg, seed
        self.layout = space_layout(model)
        ref = next(iter(arch.masks().values()))
        self.projection = Projection(model.arch_shapes(), ref.device, ref.dtype)
        arch.projection = self.projection

    def _rng(self, step: int, kind: str) -> random.Random:
        # One generator per decision, derived from the seed: nothing to save for resume.
        return random.Random(f"darts-pt:{self.seed}:{step}:{kind}")

    def _weights(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {k: w.detach() for k, w in self.arch.weights().items()}

    def _score(self, weights) -> dict[str, float]:
        acc, loss = score(self.model, weights, self.batches, self.cfg.bn)
        return {"acc": acc, "loss": loss}

    def op_step(self, step: int) -> list[dict]:
        """Decide one random undecided edge of every cell type; their records."""
        records = []
        for kind in self.layout.edges:
            undecided = self.projection.undecided_edges(kind)
            if undecided:
                edge = self._rng(step, kind).choice(undecided)
                records.append(self.decide_op(kind, edge))
        return records

    def decide_op(self, kind: str, edge: int) -> dict:
        """Score removing each live op of `edge`, fix the edge to the most missed one."""
        t0 = time.perf_counter()
        weights, names = self._weights(), self.layout.ops[kind][edge]
        alive = self.arch.masks()[kind][edge].tolist()  # ops pruned in the search: no candidates
        candidates = [
            {"op": name, **self._score(without(weights, kind, edge, o))}
            for o, name in enumerate(names)
            if alive[o]
        ]
        if candidates:
            chosen = candidates[most_missed(candidates, self.cfg.criterion)]["op"]
            self.projection.fix_op(kind, edge, names.index(chosen))
        else:
            chosen = None  # every op was pruned: the edge is cut
            self.projection.cut_edge(kind, edge)
        source, node = self.layout.edges[kind][edge]
        return {
            "decision": "op",
            "cell": kind,
            "edge": edge,
            "from": source,
            "to": node,
            "criterion": self.cfg.criterion,
            "candidates": candidates,
            "chosen": chosen,
            "time_s": time.perf_counter() - t0,
        }

    def node_step(self, step: int) -> list[dict]:
        """Decide the inputs of one random undecided node of every cell type; their records."""
        records = []
        for kind in self.layout.edges:
            done = self.projection.nodes[kind]
            undecided = [n for n in self.layout.nodes_to_decide(kind) if n not in done]
            if undecided:
                node = self._rng(step, kind).choice(undecided)
                records.append(self.decide_node(kind, node))
        return records

    def decide_node(self, kind: str, node: int) -> dict:
        """Drop the input edge of `node` whose removal hurts least, until it has
        `layout.node_inputs` left; the dropped edges are cut.

        Each round scores the node with the edges dropped in earlier rounds already removed
        (the reference code leaves them in until the node is decided, which makes its later
        rounds re-measure the first with new data noise).
        """
        t0 = time.perf_counter()
        weights = self._weights()
        remaining, rounds = self.layout.in_edges(kind, node), []
        while len(remaining) > self.layout.node_inputs:
            candidates = [
                {
                    "edge": e,
                    "from": self.layout.edges[kind][e][0],
                    **self._score(without(weights, kind, e)),
                }
                for e in remaining
            ]
            dropped = candidates[least_missed(candidates, self.cfg.criterion)]["edge"]
            remaining.remove(dropped)
            weights = without(weights, kind, dropped)
            rounds.append({"candidates": candidates, "dropped": dropped})
        cut = [r["dropped"] for r in rounds]
        self.projection.decide_node(kind, node, cut)
        return {
            "decision": "node",
            "cell": kind,
            "node": node,
            "criterion": self.cfg.criterion,
            "rounds": rounds,
            "kept": remaining,
            "kept_from": [self.layout.edges[kind][e][0] for e in remaining],
            "time_s": time.perf_counter() - t0,
        }
