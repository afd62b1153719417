"""The two-input recurrent backbone (ours, docs/METHODS.md section 5: the paper's is not known).

DARTS's RNN ops are activations of one input, so no cell it finds multiplies two computed
signals as LSTM and GRU cells do. Here node k has two fixed inputs, a = s_{k-1} (the chain) and
b = its second source (`second`: s0, node k-2, or h_{t-1}), and one mixed op over candidates
g(a, b) that take both:

    hadamard  a * b                  add       (a + b) / 2
    gate      sigmoid(a Wg_k) * b    identity  a
    tanh      tanh([a; b] Wl_k)      relu      relu([a; b] Wl_k)      (none: 0, optional)

    s_k = sum_o softmax(alpha_k)_o g_o(a, b),   h_t = mean(s_1..s_N) or s_N   (`output`)

Node 0 is the DARTS RNN highway node on (x_t, h_{t-1}). tanh and relu share one linear map Wl_k
of [a; b] per node (as the DARTS RNN cell's activations share W_i); the gate has its own Wg_k.
The variational dropout mask of the states multiplies a and b where they enter a matrix (as the
DARTS cell masks s_j before W_i); the parameter-free ops see the states themselves. The search
cell normalises s0 and every node with one BatchNorm without affine, like the DARTS RNN search
cell. `add` is the sum scaled by 1/2 (our choice): with the plain sum, a chain of `add` nodes
multiplies the state's scale by up to k + 1 at every time step, and the final cell (which has
no BN) diverged exponentially (an all-`add` cell found on exchange-rate forecast with a
validation RSE of 1e33); scaled, every op but `relu` maps states in [-1, 1] into [-1, 1], and
the highway node keeps h_t there, as the DARTS RNN cell does. The derivation keeps every node
and picks its strongest non-`none` op (`PairRNNGenotype`); the final cell (`pair_rnn` recurrent
core) has only the chosen ops' matrices and no BN. Growth appends node N+1 (a = s_N) at
presence 0 (`NodePresence`).
"""

from __future__ import annotations

import torch
from torch import nn

from diffnas.registry import Registry
from diffnas.spaces.darts_rnn import HighwayRecurrence, RecurrentGrowth, node_weight, shared_norm
from diffnas.spaces.forecaster import ForecastShape, RecurrentForecaster
from diffnas.spaces.genotypes import (
    DARTS_RNN_STEPS,
    PAIR_RNN_OPS,
    PAIR_RNN_OUTPUTS,
    PAIR_RNN_SECONDS,
    PairRNNGenotype,
)
from diffnas.spaces.growth import NodePresence
from diffnas.spaces.language_model import RNNLanguageModel
from diffnas.spaces.recurrent import RECURRENT_CORES

# g(a, b, z): z holds the node's pre-activations its ops need ("linear": [a; b] Wl, "gate": a Wg).
PAIR_OPS: Registry = Registry("two-input op")
PAIR_OPS.add("hadamard", lambda a, b, z: a * b)
PAIR_OPS.add("add", lambda a, b, z: 0.5 * (a + b))  # the sum scaled by 1/2: see the module doc
PAIR_OPS.add("gate", lambda a, b, z: torch.sigmoid(z["gate"]) * b)
PAIR_OPS.add("tanh", lambda a, b, z: torch.tanh(z["linear"]))
PAIR_OPS.add("relu", lambda a, b, z: torch.relu(z["linear"]))
PAIR_OPS.add("identity", lambda a, b, z: a)
# The matrix each op reads: name -> (rows as a multiple of d, i.e. its input, a or [a; b]).
OP_MATRIX = {"gate": "gate", "tanh": "linear", "relu": "linear"}
MATRIX_ROWS = {"gate": 1, "linear": 2}
PAIR_PARAMETER_FREE = frozenset(o for o in PAIR_OPS.names() if o not in OP_MATRIX)

# b of node k (1-based) from the states s_0..s_{k-1} and h_{t-1}.
SECOND_SOURCES: Registry = Registry("two-input second source")
SECOND_SOURCES.add("s0", lambda states, k, h_prev: states[0])
SECOND_SOURCES.add("previous", lambda states, k, h_prev: states[max(k - 2, 0)])
SECOND_SOURCES.add("hidden", lambda states, k, h_prev: h_prev)

assert set(PAIR_OPS.names()) == set(PAIR_RNN_OPS) - {"none"}
assert set(SECOND_SOURCES.names()) == set(PAIR_RNN_SECONDS)


class _PairCellBase(NodePresence, HighwayRecurrence):
    """Node k's matrices (`mats["linear_k"]` [2d, d], `mats["gate_k"]` [d, d], only those its
    ops need), the two inputs, one node's computation and the output."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        node_ops: list[tuple[str, ...]],
        second: str,
        output: str,
        dropouth: float,
        dropoutx: float,
    ):
        super().__init__(input_size, hidden_size, dropouth, dropoutx)
        if output not in PAIR_RNN_OUTPUTS:
            raise ValueError(f"output {output!r}; allowed: {', '.join(PAIR_RNN_OUTPUTS)}")
        self.second, self.output = second, output
        self.second_of = SECOND_SOURCES.get(second)
        self.mats = nn.ParameterDict()
        self.steps = 0
        self.presence = []
        for ops in node_ops:
            self._append_node(ops)

    def _append_node(self, ops: tuple[str, ...]) -> list[nn.Parameter]:
        """Node steps+1 with the matrices of `ops`, at presence 1; its new parameters."""
        self.steps += 1
        d, added = self.hidden_size, []
        for kind in sorted({OP_MATRIX[o] for o in ops if o in OP_MATRIX}):
            w = node_weight(MATRIX_ROWS[kind] * d, d, like=self.W0)
            self.mats[f"{kind}_{self.steps}"] = w
            added.append(w)
        self.presence.append(1.0)
        return added

    def _node(self, k, states, h_prev, h_mask, ops, fns, weights):
        """s_k = sum_n weights[n] * fns[n](a, b, z) over the node's live `ops` (the plain op
        when weights is None); only the matrices those ops read are multiplied."""
        a = states[k - 1]
        b = self.second_of(states, k, h_prev)
        am, bm = (a, b) if h_mask is None else (a * h_mask, b * h_mask)
        needs = {OP_MATRIX[o] for o in ops if o in OP_MATRIX}
        z = {}
        if "linear" in needs:
            z["linear"] = torch.cat([am, bm], dim=-1) @ self.mats[f"linear_{k}"]
        if "gate" in needs:
            z["gate"] = am @ self.mats[f"gate_{k}"]
        if weights is None:
            return fns[0](a, b, z)
        s = weights[0] * fns[0](a, b, z)
        for w, fn in zip(weights[1:], fns[1:], strict=True):
            s = s + w * fn(a, b, z)
        return s

    def _output(self, states: list[torch.Tensor]) -> torch.Tensor:
        return self.present_mean(states) if self.output == "mean" else self.present_last(states)


class PairRNNSearchCell(_PairCellBase):
    """The two-input search cell: forward(x [T, B, in], hidden [B, d], weights [steps, ops])."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        steps: int = DARTS_RNN_STEPS,
        ops: tuple[str, ...] = PAIR_RNN_OPS,
        second: str = "s0",
        output: str = "mean",
        dropouth: float = 0.0,
        dropoutx: float = 0.0,
        batch_norm: bool = True,
    ):
        unknown = [o for o in ops if o not in PAIR_RNN_OPS]
        if unknown:
            raise ValueError(f"unknown two-input ops {unknown}; allowed: {PAIR_RNN_OPS}")
        ops = tuple(ops)
        super().__init__(input_size, hidden_size, [ops] * steps, second, output, dropouth, dropoutx)
        self.ops = ops
        self.bn = nn.BatchNorm1d(hidden_size, affine=False) if batch_norm else None

    def add_node(self) -> list[nn.Parameter]:
        """Append node steps+1 (a = s_steps) with all ops, at presence 0."""
        added = self._append_node(self.ops)
        self.presence[-1] = 0.0
        return added

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None, weights: torch.Tensor):
        """(outputs [T, B, d], last hidden [B, d]) under op weights `weights` [steps, ops]."""
        if weights.shape != (self.steps, len(self.ops)):
            raise ValueError(
                f"expected weights of shape {(self.steps, len(self.ops))}, "
                f"got {tuple(weights.shape)}"
            )
        # Per node: the live ops (non-zero weight, not `none`) and their weights.
        alive = (weights != 0).tolist()
        plan = []
        for k in range(self.steps):
            cols = [c for c, o in enumerate(self.ops) if o != "none" and alive[k][c]]
            ops = [self.ops[c] for c in cols]
            plan.append((ops, [PAIR_OPS.get(o) for o in ops], [weights[k, c] for c in cols]))
        norm = shared_norm(self.bn, self.training, len(x) * (self.steps + 1))

        def cell(s0, h_prev, h_mask):
            states = [norm(s0)]
            for k, (ops, fns, ws) in enumerate(plan, start=1):
                if fns:
                    s = self._node(k, states, h_prev, h_mask, ops, fns, ws)
                else:
                    s = torch.zeros_like(s0)
                states.append(norm(s))
            return self._output(states[1:])

        return self._run(x, hidden, cell)


class PairRNNCell(_PairCellBase):
    """The final cell of a `PairRNNGenotype`, behind the recurrent core interface."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        genotype: PairRNNGenotype,
        dropouth: float = 0.0,
        dropoutx: float = 0.0,
    ):
        node_ops = [(op,) for op in genotype.ops]
        super().__init__(
            input_size, hidden_size, node_ops, genotype.second, genotype.output, dropouth, dropoutx
        )
        self.genotype = genotype
        self.fns = [[PAIR_OPS.get(op)] for op in genotype.ops]

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None):
        """(outputs [T, B, d], last hidden [B, d])."""

        def cell(s0, h_prev, h_mask):
            states = [s0]
            for k, (op, fns) in enumerate(zip(self.genotype.ops, self.fns, strict=True), start=1):
                states.append(self._node(k, states, h_prev, h_mask, [op], fns, None))
            return self._output(states[1:])

        return self._run(x, hidden, cell)


@RECURRENT_CORES.register("pair_rnn")
def pair_rnn_core(
    input_size: int,
    hidden_size: int,
    genotype: PairRNNGenotype | None = None,
    dropouth: float = 0.0,
    dropoutx: float = 0.0,
) -> PairRNNCell:
    """The final two-input cell of `genotype` (a `pair_rnn` search's genotype.json)."""
    if not isinstance(genotype, PairRNNGenotype):
        got = "none was given" if genotype is None else f"got {genotype}"
        raise ValueError(
            "the pair_rnn core needs a two-input RNN genotype (train.genotype / --genotype: a "
            f"pair_rnn search's run directory, or PairRNNGenotype(ops=[...]) text); {got}"
        )
    return PairRNNCell(input_size, hidden_size, genotype, dropouth, dropoutx)


def derive_pair_genotype(
    w: torch.Tensor, ops: tuple[str, ...], second: str, output: str
) -> PairRNNGenotype:
    """Every node kept, with its strongest non-`none` op (the first on ties)."""
    cols = [c for c, o in enumerate(ops) if o != "none"]
    best = w.detach()[:, cols].argmax(dim=1).tolist()
    return PairRNNGenotype(tuple(ops[cols[b]] for b in best), second, output)


class PairRNNArch(RecurrentGrowth):
    """The architecture interface of a model around a two-input search cell: one alpha row
    per node (`{"rnn": [steps, ops]}`), the derivation, the projection and growth."""

    op_names: tuple[str, ...]
    fixed_edges = True  # every node's inputs are fixed: pruning (grow_and_prune) prunes ops

    def arch_shapes(self) -> dict[str, tuple[int, int]]:
        """Shapes of the architecture weights the forward expects."""
        return {"rnn": (self.steps, len(self.op_names))}

    def genotype(self, weights: dict[str, torch.Tensor]) -> PairRNNGenotype:
        """The derived cell: each node's strongest non-`none` op."""
        return derive_pair_genotype(
            weights["rnn"], self.op_names, self.core.second, self.core.output
        )

    def project(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The derived genotype as 0/1 weights: one 1 per node (its op)."""
        out = torch.zeros_like(weights["rnn"])
        for k, op in enumerate(self.genotype(weights).ops):
            out[k, self.op_names.index(op)] = 1.0
        return {"rnn": out}


class PairRNNSuperNet(PairRNNArch, RNNLanguageModel):
    """The language-model search model: embedding -> two-input search cell -> tied decoder;
    `forward(tokens [T, B], weights, hidden=None, return_h=False)`."""

    def __init__(
        self,
        ntoken: int,
        emsize: int,
        cell: PairRNNSearchCell,
        dropout=0.0,
        dropouti=0.0,
        dropoute=0.0,
    ):
        super().__init__(ntoken, emsize, cell, dropout, dropouti, dropoute)
        self.steps, self.op_names = cell.steps, cell.ops

    def forward(self, tokens, weights: dict[str, torch.Tensor], hidden=None, return_h=False):
        """(logits [T, B, ntoken], hidden) (and the core outputs with return_h)."""
        return super().forward(tokens, hidden, return_h, weights=weights["rnn"])


class PairRNNForecastSuperNet(PairRNNArch, RecurrentForecaster):
    """The forecasting search model: the two-input search cell reads the window, its last
    state -> the forecaster's head. `forward(x [B, L, N], weights)`."""

    def __init__(
        self,
        shape: ForecastShape,
        cell: PairRNNSearchCell,
        nhid: int,
        dropout=0.0,
        highway: int = 0,
        channel_independent: bool = False,
    ):
        super().__init__(cell, shape, nhid, dropout, highway, channel_independent)
        self.steps, self.op_names = cell.steps, cell.ops

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """x [B, L, N] -> [B, N] or [B, H, N] under op weights `weights`."""
        return super().forward(x, weights=weights["rnn"])


def _search_cell(space_cfg, input_size: int, hidden: int, lm_cfg, drop_none: bool):
    keep_none = space_cfg.pair_none and not drop_none
    ops = tuple(o for o in PAIR_RNN_OPS if keep_none or o != "none")
    return PairRNNSearchCell(
        input_size,
        hidden,
        space_cfg.steps,
        ops,
        space_cfg.pair_second,
        space_cfg.pair_output,
        lm_cfg.dropouth,
        lm_cfg.dropoutx,
        lm_cfg.search_bn,
    )


def build_lm_supernet(space_cfg, ntoken: int, lm_cfg, drop_none: bool) -> PairRNNSuperNet:
    """The two-input LM supernet: `[space]` steps and pair_* keys, `[lm]` sizes and dropouts."""
    cell = _search_cell(space_cfg, lm_cfg.emsize, lm_cfg.nhid, lm_cfg, drop_none)
    return PairRNNSuperNet(
        ntoken, lm_cfg.emsize, cell, lm_cfg.dropout, lm_cfg.dropouti, lm_cfg.dropoute
    )


def build_forecast_supernet(
    space_cfg, shape: ForecastShape, forecast_cfg, lm_cfg, drop_none: bool
) -> PairRNNForecastSuperNet:
    """The two-input forecasting supernet (`[forecast]` sizes and head, as the final one)."""
    f = forecast_cfg
    in_size = 1 if f.channel_independent else shape.n_series
    cell = _search_cell(space_cfg, in_size, f.hidden, lm_cfg, drop_none)
    return PairRNNForecastSuperNet(
        shape, cell, f.hidden, f.dropout, f.highway, f.channel_independent
    )


PAIR_SEARCH_MODELS: Registry = Registry("two-input RNN search task")
PAIR_SEARCH_MODELS.add(
    "lm", lambda cfg, num_classes, drop_none, lm: build_lm_supernet(cfg, num_classes, lm, drop_none)
)
PAIR_SEARCH_MODELS.add(
    "forecast",
    lambda cfg, num_classes, drop_none, shape, forecast, lm: build_forecast_supernet(
        cfg, shape, forecast, lm, drop_none
    ),
)
