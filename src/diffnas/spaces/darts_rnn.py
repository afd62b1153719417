"""The DARTS RNN space: the search cell (supernet), the derivation rule and the final cell.

A cell maps (x_t, h_{t-1}) to h_t through a highway node 0 and `steps` (8) intermediate nodes:

    [c0; h0] = [x_t; h_{t-1}] W0,  s0 = h_{t-1} + sigmoid(c0) * (tanh(h0) - h_{t-1})
    [c; h] = s_j W_i,              s_i = s_j + sigmoid(c) * (f(h) - s_j)
    h_t = mean(s_1, ..., s_8)

The final cell (a genotype) gives each node i one predecessor j < i and one activation f. The
search cell sums over every predecessor and every activation, weighted by the edge weights
(`weights["rnn"]`, [36, 5] for 8 nodes: edge (j -> i) is row i(i-1)/2 + j for nodes i = 1..8);
W_i is shared by all of node i's incoming edges and activations, and a BatchNorm without affine
normalises s0 and each node, as in quark0/darts rnn/model_search.py. The derivation keeps, per
node, the incoming edge with the largest non-`none` weight and its best non-`none` activation.

The final cell is registered as recurrent core "darts_rnn" (`build_core("darts_rnn", ninp,
nhid, genotype=...)`), so the language model and the baselines share one harness.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.registry import Registry
from diffnas.spaces.forecaster import ForecastShape, RecurrentForecaster
from diffnas.spaces.genotypes import DARTS_RNN_OPS, DARTS_RNN_STEPS, RNNGenotype, validate_rnn
from diffnas.spaces.growth import Growth, NodePresence, forked_rng
from diffnas.spaces.language_model import INIT_RANGE, RNNLanguageModel, dropout_mask
from diffnas.spaces.recurrent import RECURRENT_CORES

RNN_ACTIVATIONS: Registry = Registry("DARTS RNN activation")
RNN_ACTIVATIONS.add("tanh", torch.tanh)
RNN_ACTIVATIONS.add("relu", torch.relu)
RNN_ACTIVATIONS.add("sigmoid", torch.sigmoid)
RNN_ACTIVATIONS.add("identity", lambda h: h)


def n_edges(steps: int) -> int:
    """Edges of a search cell with `steps` nodes: node i (1-based) has i inputs s_0..s_{i-1}."""
    return steps * (steps + 1) // 2


def edge_offset(node: int) -> int:
    """Row of the edge (0 -> node) in the weights; node is 1-based."""
    return (node - 1) * node // 2


class HighwayRecurrence(nn.Module):
    """Node 0 and the time loop shared by the DARTS RNN cells and the two-input backbone:
    s0 = h_{t-1} + sigmoid(c0) * (tanh(h0) - h_{t-1}), [c0; h0] = [x_t; h_{t-1}] W0, then
    `cell(s0, h_{t-1}, h_mask) -> h_t`, with the variational dropouts of the original."""

    def __init__(self, input_size: int, hidden_size: int, dropouth: float, dropoutx: float):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.dropouth, self.dropoutx = dropouth, dropoutx
        d = hidden_size
        self.W0 = nn.Parameter(torch.empty(input_size + d, 2 * d).uniform_(-INIT_RANGE, INIT_RANGE))

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        """Zero state [batch_size, hidden_size]."""
        return self.W0.new_zeros(batch_size, self.hidden_size)

    def _run(self, x: torch.Tensor, hidden: torch.Tensor | None, cell) -> tuple:
        """Apply `cell(s0, h_prev, h_mask) -> h_t` at every step; (outputs [T, B, d], last
        state)."""
        T, B, _ = x.shape
        d = self.hidden_size
        h = self.init_hidden(B) if hidden is None else hidden
        # Variational dropout: one mask per sequence for x and for the states, as the original.
        if self.training and self.dropoutx > 0:
            x = x * dropout_mask(B, self.input_size, self.dropoutx, x)
        h_mask = None
        if self.training and self.dropouth > 0:
            h_mask = dropout_mask(B, d, self.dropouth, x)
        # [x_t; h] W0 = x_t W0[:in] + h W0[in:]: the input half of all T steps in one matmul.
        xw = (x.reshape(T * B, -1) @ self.W0[: self.input_size]).view(T, B, 2 * d)
        w0h = self.W0[self.input_size :]
        outs = []
        for t in range(T):
            hm = h if h_mask is None else h * h_mask
            c0, h0 = (xw[t] + hm @ w0h).split(d, dim=-1)
            s0 = h + torch.sigmoid(c0) * (torch.tanh(h0) - h)
            h = cell(s0, h, h_mask)
            outs.append(h)
        return torch.stack(outs), h


def node_weight(rows: int, cols: int, like: torch.Tensor | None = None) -> nn.Parameter:
    """A node matrix initialised as the original's (uniform in +-INIT_RANGE), drawn on the CPU
    (so a seeded growth step draws the same values on any device), then moved to `like`'s
    device and dtype."""
    w = torch.empty(rows, cols).uniform_(-INIT_RANGE, INIT_RANGE)
    return nn.Parameter(w if like is None else w.to(like))


def shared_norm(bn: nn.BatchNorm1d | None, training: bool, calls: int):
    """The search cells' one BatchNorm (affine=False) for s0 and every node, as a function
    (the identity without BN): F.batch_norm on the module's buffers does what bn(s) does,
    without the module-call overhead of steps + 1 calls per time step; `calls` (the BN calls
    of this forward) advance num_batches_tracked once."""
    if bn is None:
        return lambda s: s
    momentum = 0.0 if bn.momentum is None else bn.momentum
    use_batch = training or bn.running_mean is None
    if training:
        bn.num_batches_tracked.add_(calls)

    def norm(s):
        return F.batch_norm(
            s, bn.running_mean, bn.running_var, None, None, use_batch, momentum, bn.eps
        )

    return norm


class _DartsRNNCellBase(HighwayRecurrence):
    """The parameters W0, W_1..W_steps of the DARTS RNN cells."""

    def __init__(
        self, input_size: int, hidden_size: int, steps: int, dropouth: float, dropoutx: float
    ):
        super().__init__(input_size, hidden_size, dropouth, dropoutx)
        self.steps = steps
        d = hidden_size
        self.Ws = nn.ParameterList(node_weight(d, 2 * d) for _ in range(steps))


class DartsRNNSearchCell(NodePresence, _DartsRNNCellBase):
    """The DARTS RNN search cell: forward(x [T, B, in], hidden [B, d], weights [edges, ops]).

    Its output is the presence-weighted mean of the nodes (`NodePresence`: the plain mean
    unless the cell is growing); `add_node()` appends a node at presence 0."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        steps: int = DARTS_RNN_STEPS,
        ops: tuple[str, ...] = DARTS_RNN_OPS,
        dropouth: float = 0.0,
        dropoutx: float = 0.0,
        batch_norm: bool = True,
    ):
        super().__init__(input_size, hidden_size, steps, dropouth, dropoutx)
        unknown = [o for o in ops if o != "none" and o not in RNN_ACTIVATIONS]
        if unknown:
            raise ValueError(f"unknown DARTS RNN ops {unknown}; allowed: {DARTS_RNN_OPS}")
        self.ops = tuple(ops)
        # One BN (affine=False) for s0 and every node, as in the original search cell.
        self.bn = nn.BatchNorm1d(hidden_size, affine=False) if batch_norm else None
        self.presence = [1.0] * steps

    def add_node(self) -> list[nn.Parameter]:
        """Append node steps+1 (edges from every state, a fresh W drawn from the global
        generator) at presence 0: the output is unchanged until the presence ramps up. Returns
        the new parameters."""
        d = self.hidden_size
        w = node_weight(d, 2 * d, like=self.W0)
        self.Ws.append(w)
        self.steps += 1
        self.presence.append(0.0)
        return [w]

    def _plan(self, w: torch.Tensor):
        """Per node: (active predecessors, their weights per active op [k, 1, 1], the sum of
        those weights [k, 1, 1], the ops' functions); None for a node with no live edge. Zero
        weights and `none` drop out, so their ops never run."""
        alive = (w != 0).tolist()
        cols_all = [k for k, o in enumerate(self.ops) if o != "none"]
        plan = []
        for node in range(1, self.steps + 1):
            rows = range(edge_offset(node), edge_offset(node) + node)
            preds = [j for j, r in enumerate(rows) if any(alive[r][k] for k in cols_all)]
            if not preds:
                plan.append(None)
                continue
            cols = [k for k in cols_all if any(alive[rows[j]][k] for j in preds)]
            sub = w[[rows[j] for j in preds]][:, cols]  # [k, n_active]
            k = len(preds)
            per_op = [sub[:, n].view(k, 1, 1) for n in range(len(cols))]
            fns = [RNN_ACTIVATIONS.get(self.ops[c]) for c in cols]
            plan.append((preds, per_op, sub.sum(-1).view(k, 1, 1), fns))
        return plan

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None, weights: torch.Tensor):
        """(outputs [T, B, d], last hidden [B, d]) under edge weights `weights`."""
        if weights.shape != (n_edges(self.steps), len(self.ops)):
            raise ValueError(
                f"expected weights of shape {(n_edges(self.steps), len(self.ops))}, "
                f"got {tuple(weights.shape)}"
            )
        plan = self._plan(weights)
        d = self.hidden_size
        norm = shared_norm(self.bn, self.training, len(x) * (self.steps + 1))

        def cell(s0, h_prev, h_mask):
            s0 = norm(s0)
            states = [s0]
            masked = [s0 if h_mask is None else s0 * h_mask]
            for i, node in enumerate(plan):
                if node is None:
                    s = torch.zeros_like(s0)
                else:
                    preds, per_op, wsum, fns = node
                    k = len(preds)
                    if k == 1:
                        S, M = states[preds[0]].unsqueeze(0), masked[preds[0]].unsqueeze(0)
                    else:
                        S = torch.stack([states[j] for j in preds])
                        M = torch.stack([masked[j] for j in preds])
                    ch = (M.reshape(-1, d) @ self.Ws[i]).view(k, -1, 2 * d)
                    c, h = ch.split(d, dim=-1)
                    c = torch.sigmoid(c)
                    # sum_o w_o (S + c (f_o(h) - S)) = wS + c (sum_o w_o f_o(h) - wS), w = sum_o w_o
                    g = per_op[0] * fns[0](h)
                    for w_o, fn in zip(per_op[1:], fns[1:], strict=True):
                        g = torch.addcmul(g, w_o, fn(h))
                    ws = wsum * S
                    s = torch.addcmul(ws, c, g - ws).sum(0)
                s = norm(s)
                states.append(s)
                masked.append(s if h_mask is None else s * h_mask)
            return self.present_mean(states[1:])

        return self._run(x, hidden, cell)


class DartsRNNCell(_DartsRNNCellBase):
    """The final DARTS RNN cell of a genotype, behind the recurrent core interface."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        genotype: RNNGenotype,
        dropouth: float = 0.0,
        dropoutx: float = 0.0,
    ):
        genotype = validate_rnn(genotype, steps=None)
        super().__init__(input_size, hidden_size, len(genotype.recurrent), dropouth, dropoutx)
        self.genotype = genotype
        self.fns = [RNN_ACTIVATIONS.get(op) for op, _ in genotype.recurrent]
        # Nodes reading the same state share one matmul: children[j] = nodes whose input is j.
        self.children_of = [
            [i for i, (_, j) in enumerate(genotype.recurrent) if j == src]
            for src in range(len(genotype.recurrent) + 1)
        ]

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None):
        """(outputs [T, B, d], last hidden [B, d])."""
        d = self.hidden_size
        # The concatenated W of each state's children, built once per forward, not per step.
        fused = [
            torch.cat([self.Ws[i] for i in ch], dim=1) if ch else None for ch in self.children_of
        ]

        def cell(s0, h_prev, h_mask):
            states: list[torch.Tensor | None] = [s0] + [None] * self.steps
            for src, children in enumerate(self.children_of):
                if not children:
                    continue
                sp = states[src]
                ch = (sp if h_mask is None else sp * h_mask) @ fused[src]
                for n, i in enumerate(children):
                    c, h = ch[:, 2 * d * n : 2 * d * (n + 1)].split(d, dim=-1)
                    states[i + 1] = sp + torch.sigmoid(c) * (self.fns[i](h) - sp)
            return torch.stack([states[k] for k in self.genotype.concat]).mean(0)

        return self._run(x, hidden, cell)


@RECURRENT_CORES.register("darts_rnn")
def darts_rnn_core(
    input_size: int,
    hidden_size: int,
    genotype: RNNGenotype | None = None,
    dropouth: float = 0.0,
    dropoutx: float = 0.0,
) -> DartsRNNCell:
    """The final DARTS RNN cell of `genotype` (e.g. load_genotype("DARTS_RNN_V2"))."""
    if not isinstance(genotype, RNNGenotype):
        got = "none was given" if genotype is None else f"got {genotype}"
        raise ValueError(
            "the darts_rnn core needs a DARTS RNN genotype (train.genotype / --genotype: "
            f"DARTS_RNN_V2, a darts_rnn search's run directory, ...); {got}"
        )
    return DartsRNNCell(input_size, hidden_size, genotype, dropouth, dropoutx)


def derive_genotype(w: torch.Tensor, ops: tuple[str, ...], steps: int) -> RNNGenotype:
    """The DARTS RNN rule: per node, the incoming edge whose best non-`none` weight is largest
    (the first on ties) and that edge's best non-`none` op."""
    cols = [k for k, o in enumerate(ops) if o != "none"]
    w = w.detach()[:, cols]
    recurrent = []
    for node in range(1, steps + 1):
        rows = w[edge_offset(node) : edge_offset(node) + node]
        j = int(rows.max(dim=1).values.argmax())
        recurrent.append((ops[cols[int(rows[j].argmax())]], j))
    return RNNGenotype(recurrent, list(range(1, steps + 1)))


class RecurrentGrowth:
    """The growth interface (`diffnas.spaces.growth`) of a model around a growing recurrent
    search cell (`self.core`, with `add_node()` and `NodePresence`): the new node joins at
    presence 0, so the model's function is unchanged; the grower ramps it in
    (`set_presence`)."""

    steps: int
    core: nn.Module

    def num_nodes(self) -> int:
        """Intermediate nodes of the cell now."""
        return self.steps

    def growth_blocker(self) -> str | None:
        """The recurrent cells can always grow."""
        return None

    def grow(self, seed: int | None = None) -> Growth:
        """Add one node to the cell, in place, function-preserving (its presence is 0)."""
        with forked_rng(seed):
            added = self.core.add_node()
        self.steps = self.core.steps
        return Growth(nodes=self.steps, added=added)

    def presence(self) -> list[float]:
        """The presence of each node in the cell's output (1: a full node)."""
        return list(self.core.presence)

    def set_presence(self, node: int, value: float) -> None:
        """Set the presence of node `node` (0-based among the intermediate nodes)."""
        self.core.presence[node] = float(value)


class DartsRNNArch(RecurrentGrowth):
    """The architecture interface of a model around a DARTS RNN search cell (`self.steps`,
    `self.op_names`): the weights' shapes, the derivation rule, the projection and growth."""

    op_names: tuple[str, ...]

    def arch_shapes(self) -> dict[str, tuple[int, int]]:
        """Shapes of the architecture weights the forward expects."""
        return {"rnn": (n_edges(self.steps), len(self.op_names))}

    def genotype(self, weights: dict[str, torch.Tensor]) -> RNNGenotype:
        """The derived RNN genotype (one input and one activation per node)."""
        return derive_genotype(weights["rnn"], self.op_names, self.steps)

    def project(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The derived genotype as 0/1 edge weights: one 1 per node (its edge and op)."""
        out = torch.zeros_like(weights["rnn"])
        for node, (op, j) in enumerate(self.genotype(weights).recurrent, start=1):
            out[edge_offset(node) + j, self.op_names.index(op)] = 1.0
        return {"rnn": out}


class DartsRNNSuperNet(DartsRNNArch, RNNLanguageModel):
    """The search model: embedding -> DARTS RNN search cell -> tied decoder.

    `forward(tokens [T, B], weights, hidden=None, return_h=False)`; the weights are
    `{"rnn": [36, len(ops)]}` (ArchParameters' `alphas_rnn`).
    """

    def __init__(
        self,
        ntoken: int,
        emsize: int,
        nhid: int,
        steps: int = DARTS_RNN_STEPS,
        ops: tuple[str, ...] = DARTS_RNN_OPS,
        dropout: float = 0.0,
        dropouth: float = 0.0,
        dropoutx: float = 0.0,
        dropouti: float = 0.0,
        dropoute: float = 0.0,
        batch_norm: bool = True,
    ):
        cell = DartsRNNSearchCell(emsize, nhid, steps, ops, dropouth, dropoutx, batch_norm)
        super().__init__(ntoken, emsize, cell, dropout, dropouti, dropoute)
        self.steps, self.op_names = steps, tuple(ops)

    def forward(self, tokens, weights: dict[str, torch.Tensor], hidden=None, return_h=False):
        """(logits [T, B, ntoken], hidden) (and the core outputs with return_h)."""
        return super().forward(tokens, hidden, return_h, weights=weights["rnn"])


class DartsRNNForecastSuperNet(DartsRNNArch, RecurrentForecaster):
    """The forecasting search model: the DARTS RNN search cell reads the window from the zero
    state, its last state -> the forecaster's linear head (`RecurrentForecaster`, the same
    head as the final `darts_rnn` forecaster). `forward(x [B, L, N], weights)`."""

    def __init__(
        self,
        shape: ForecastShape,
        nhid: int,
        steps: int = DARTS_RNN_STEPS,
        ops: tuple[str, ...] = DARTS_RNN_OPS,
        dropout: float = 0.0,
        dropouth: float = 0.0,
        dropoutx: float = 0.0,
        batch_norm: bool = True,
        highway: int = 0,
        channel_independent: bool = False,
    ):
        in_size = 1 if channel_independent else shape.n_series
        cell = DartsRNNSearchCell(in_size, nhid, steps, ops, dropouth, dropoutx, batch_norm)
        super().__init__(cell, shape, nhid, dropout, highway, channel_independent)
        self.steps, self.op_names = steps, tuple(ops)

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """x [B, L, N] -> [B, N] or [B, H, N] under edge weights `weights`."""
        return super().forward(x, weights=weights["rnn"])


def _search_ops(drop_none: bool) -> tuple[str, ...]:
    return tuple(o for o in DARTS_RNN_OPS if not (drop_none and o == "none"))


def build_search_supernet(space_cfg, ntoken: int, lm_cfg, drop_none: bool) -> DartsRNNSuperNet:
    """The DARTS RNN supernet sized by `[space]` (steps) and `[lm]` (units, dropouts)."""
    ops = _search_ops(drop_none)
    return DartsRNNSuperNet(
        ntoken,
        lm_cfg.emsize,
        lm_cfg.nhid,
        space_cfg.steps,
        ops,
        lm_cfg.dropout,
        lm_cfg.dropouth,
        lm_cfg.dropoutx,
        lm_cfg.dropouti,
        lm_cfg.dropoute,
        batch_norm=lm_cfg.search_bn,
    )


def build_forecast_search_supernet(
    space_cfg, shape: ForecastShape, forecast_cfg, lm_cfg, drop_none: bool
) -> DartsRNNForecastSuperNet:
    """The DARTS RNN forecasting supernet: `[space]` steps, `[forecast]` hidden size, head
    dropout, highway and channel independence (as the final forecaster), `[lm]` the cell's
    dropouth/dropoutx and search BatchNorm."""
    f = forecast_cfg
    return DartsRNNForecastSuperNet(
        shape,
        f.hidden,
        space_cfg.steps,
        _search_ops(drop_none),
        f.dropout,
        lm_cfg.dropouth,
        lm_cfg.dropoutx,
        lm_cfg.search_bn,
        f.highway,
        f.channel_independent,
    )


# The supernet of each task the DARTS RNN space searches on: `fn(space_cfg, num_classes,
# drop_none, **task options)`.
RNN_SEARCH_MODELS: Registry = Registry("DARTS RNN search task")
RNN_SEARCH_MODELS.add(
    "lm",
    lambda cfg, num_classes, drop_none, lm: build_search_supernet(cfg, num_classes, lm, drop_none),
)
RNN_SEARCH_MODELS.add(
    "forecast",
    lambda cfg, num_classes, drop_none, shape, forecast, lm: build_forecast_search_supernet(
        cfg, shape, forecast, lm, drop_none
    ),
)
