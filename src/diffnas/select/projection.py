"""The projection state of a supernet under selection: which edges and nodes are decided.

A decided edge's weights are fixed: one-hot on its chosen op (value exactly 1, whatever the
activation), or all zero once a node decision has cut the edge. `apply` puts the fixed rows
over the activated weights of the architecture parameters (it is set as `arch.projection`), so
the supernet's forward, the architect's alpha steps and the genotype all see the projected
supernet, and undecided edges keep their differentiable weights.
"""

from __future__ import annotations

import torch


class Projection:
    """Fixed weights of the decided edges, per cell type, plus the decided nodes."""

    def __init__(self, shapes: dict[str, tuple[int, int]], device=None, dtype=None):
        self.fixed = {k: torch.zeros(s, device=device, dtype=dtype) for k, s in shapes.items()}
        # On the CPU: read on every forward without a device sync.
        self.decided = {k: torch.zeros(s[0], dtype=torch.bool) for k, s in shapes.items()}
        self.nodes: dict[str, list[int]] = {k: [] for k in shapes}

    def apply(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`weights` with the rows of decided edges replaced by their fixed weights."""
        out = {}
        for k, w in weights.items():
            if k in self.decided and bool(self.decided[k].any()):
                rows = self.decided[k].to(w.device)[:, None]
                w = torch.where(rows, self.fixed[k].to(w.dtype), w)
            out[k] = w
        return out

    def undecided_edges(self, kind: str) -> list[int]:
        """The edges of cell type `kind` whose op is not chosen yet, in order."""
        return [e for e, d in enumerate(self.decided[kind].tolist()) if not d]

    def fix_op(self, kind: str, edge: int, op: int) -> None:
        """Decide `edge`: its weights become one-hot on `op`."""
        self.fixed[kind][edge] = 0.0
        self.fixed[kind][edge, op] = 1.0
        self.decided[kind][edge] = True

    def cut_edge(self, kind: str, edge: int) -> None:
        """Remove `edge` for good: all its weights become zero."""
        self.fixed[kind][edge] = 0.0
        self.decided[kind][edge] = True

    def decide_node(self, kind: str, node: int, cut: list[int]) -> None:
        """Mark `node` decided, cutting its input edges `cut`."""
        for e in cut:
            self.cut_edge(kind, e)
        self.nodes[kind].append(node)

    @property
    def complete(self) -> bool:
        """Whether every edge is decided."""
        return all(bool(d.all()) for d in self.decided.values())

    def state_dict(self) -> dict:
        """Tensors and lists only (loads with torch.load(weights_only=True))."""
        return {
            "fixed": {k: v.cpu() for k, v in self.fixed.items()},
            "decided": {k: v.cpu() for k, v in self.decided.items()},
            "nodes": {k: list(v) for k, v in self.nodes.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict (onto this projection's devices)."""
        for k in self.fixed:
            self.fixed[k].copy_(state["fixed"][k])
            self.decided[k].copy_(state["decided"][k])
            self.nodes[k] = [int(n) for n in state["nodes"][k]]


def without(
    weights: dict[str, torch.Tensor], kind: str, edge: int, op: int | None = None
) -> dict[str, torch.Tensor]:
    """A copy of `weights` with op `op` of `edge` (the whole edge when `op` is None) set to 0.

    Nothing is renormalised; only `kind`'s tensor is copied, the others are shared.
    """
    w = weights[kind].clone()
    if op is None:
        w[edge] = 0.0
    else:
        w[edge, op] = 0.0
    return {**weights, kind: w}
