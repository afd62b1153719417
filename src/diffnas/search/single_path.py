"""Single-path one-shot search: each step trains ONE sampled discrete architecture of the supernet.

The supernet has no architecture weights to learn. A sampler (chosen by name from `SAMPLERS`)
picks an architecture per step as an integer encoding per cell type; `PathCodec` turns it into
one-hot edge weights, so that the supernet's `MixedOp`s run only the sampled op of each sampled
edge (ops with weight exactly 0 are skipped, unsampled edges are cut) and only those ops'
parameters receive gradients. A step then costs about one child network, not the supernet.

Encodings (EN²AS, docs/METHODS.md section 4), one integer vector per cell type:

- DARTS spaces: `[in1, op1, in2, op2]` per intermediate node (length 4 * steps). Node i
  (0-based) takes two distinct inputs in [0, i+1] (0, 1 = the cell inputs); `op` indexes the
  ops the edge may sample (all of its candidates, `none` included unless
  `search.path_sample_none = false`).
- NB201: one op index per edge (length 6), in arch-string edge order.
- DARTS RNN: `[op, in]` per node (length 2 * steps): node i (1-based) takes one input in
  [0, i-1] and one activation (`none` is never sampled); its search cell then runs only that
  edge's matmul and that activation per node.
- Two-input backbone (`pair_rnn`): one op index per node (length steps; inputs are fixed,
  `none` is never sampled).

The step's loss and metrics come from the task's `Objective` (`diffnas.search.objectives`:
images, or the language model with its hidden state carried across BPTT segments).

Strategies: `random_path` (uniform sampling, SPOS-style) here, `novelty` (EN²AS) in
`diffnas.search.novelty`. During the search, `genotype()` is the architecture trained last and
`arch.weights()` its one-hot edge weights (the alphas are never learned); the search's result is
chosen afterwards by `diffnas select RUN_DIR --method sample_rank`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.arch import ArchParameters
from diffnas.registry import Registry
from diffnas.runs import distributed
from diffnas.runs.schedules import cosine_lr
from diffnas.search.objectives import ImageObjective, Objective
from diffnas.spaces.darts_cnn import DartsSuperNet, edge_list
from diffnas.spaces.darts_rnn import DartsRNNSuperNet, edge_offset
from diffnas.spaces.genotypes import Genotype, NB201Genotype, PairRNNGenotype, RNNGenotype
from diffnas.spaces.modes import batch_statistics
from diffnas.spaces.nb201 import EDGES as NB201_EDGES
from diffnas.spaces.nb201 import NB201SuperNet

Encoding = dict[str, torch.Tensor]  # cell type -> int64 vector


# ---------------------------------------------------------------------------------------------
# Encodings of single paths
# ---------------------------------------------------------------------------------------------


class PathCodec:
    """A space's single paths as integer encodings: bounds, sampling, rounding, weights, genotype.

    `genes` lists the encoding positions of each gene (an (input, op) pair, or an edge's op) and
    `groups` the genes whose order does not matter (the two inputs of a DARTS node); distances
    between encodings compare genes (see `diffnas.search.novelty`).
    """

    kinds: tuple[str, ...]
    length: int
    lo: torch.Tensor  # int64 [length], inclusive bounds
    hi: torch.Tensor
    genes: torch.Tensor  # int64 [n_genes, gene_len]
    groups: list[list[int]]

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        """One uniformly random valid encoding of one cell type."""
        raise NotImplementedError

    def to_arch(self, theta: torch.Tensor) -> torch.Tensor:
        """Valid encodings nearest to continuous vectors `theta` [..., length]: round, clip."""
        out = torch.round(theta).to(torch.int64)
        return torch.maximum(torch.minimum(out, self.hi), self.lo)

    def is_valid(self, enc: torch.Tensor) -> bool:
        """Whether `enc` encodes an architecture of the space."""
        enc = torch.as_tensor(enc)
        return (
            enc.shape == (self.length,)
            and not enc.is_floating_point()
            and bool(((enc >= self.lo) & (enc <= self.hi)).all())
        )

    def weights(self, encs: Encoding, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One-hot edge weights of an architecture, shaped, typed and placed like `like`."""
        raise NotImplementedError

    def genotype(self, encs: Encoding):
        """The genotype of an architecture."""
        raise NotImplementedError

    def key(self, encs: Encoding) -> str:
        """A canonical text of an architecture (equal for equal architectures)."""
        return str(self.genotype(encs))

    def sample_all(self, gen: torch.Generator) -> Encoding:
        """One uniformly random architecture (every cell type)."""
        return {k: self.sample(gen) for k in self.kinds}


def _allowed_ops(op_names, sample_none: bool) -> list[int]:
    return [i for i, o in enumerate(op_names) if sample_none or o != "none"]


class DartsCodec(PathCodec):
    """`[in1, op1, in2, op2]` per node, per cell type, for the DARTS spaces (and S1-S4)."""

    def __init__(self, model: DartsSuperNet, sample_none: bool = True):
        self.steps = model.steps
        self.multiplier = model.multiplier
        self.kinds = tuple(model.edge_ops)
        self.edges = edge_list(self.steps)
        self.edge_ops = model.edge_ops
        self.allowed = {
            k: [_allowed_ops(ops, sample_none) for ops in v] for k, v in model.edge_ops.items()
        }
        counts = {len(a) for v in self.allowed.values() for a in v}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(
                "single-path sampling needs the same number of samplable ops on every edge; "
                f"got {sorted(counts)} (set search.path_sample_none = true?)"
            )
        self.n_ops = counts.pop()
        self.length = 4 * self.steps
        hi = []
        for node in range(self.steps):
            hi += [node + 1, self.n_ops - 1, node + 1, self.n_ops - 1]
        self.hi = torch.tensor(hi, dtype=torch.int64)
        self.lo = torch.zeros(self.length, dtype=torch.int64)
        self.genes = torch.arange(self.length, dtype=torch.int64).reshape(-1, 2)
        self.groups = [[2 * n, 2 * n + 1] for n in range(self.steps)]
        self._offset = [sum(t + 2 for t in range(n)) for n in range(self.steps)]

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        """Per node two distinct inputs (a uniform pair) and a uniform op for each."""
        out = []
        for node in range(self.steps):
            ins = torch.randperm(node + 2, generator=gen)[:2].tolist()
            ops = torch.randint(self.n_ops, (2,), generator=gen).tolist()
            out += [ins[0], ops[0], ins[1], ops[1]]
        return torch.tensor(out, dtype=torch.int64)

    def to_arch(self, theta: torch.Tensor) -> torch.Tensor:
        """Round and clip; where a node's two inputs coincide, move the second to the adjacent
        input on the side of its continuous value (so every node keeps two distinct inputs)."""
        out = super().to_arch(theta)
        theta = torch.as_tensor(theta, dtype=torch.float64)
        for node in range(self.steps):
            a, b = 4 * node, 4 * node + 2
            same = out[..., a] == out[..., b]
            if not bool(same.any()):
                continue
            first = out[..., a]
            up = torch.where(theta[..., b] >= first.to(theta.dtype), first + 1, first - 1)
            alt = torch.where(up > node + 1, first - 1, up)
            alt = torch.where(alt < 0, first + 1, alt)
            out[..., b] = torch.where(same, alt, out[..., b])
        return out

    def is_valid(self, enc: torch.Tensor) -> bool:
        """In bounds, and two distinct inputs per node."""
        if not super().is_valid(enc):
            return False
        enc = torch.as_tensor(enc)
        return all(int(enc[4 * n]) != int(enc[4 * n + 2]) for n in range(self.steps))

    def _pairs(self, enc: torch.Tensor, kind: str) -> list[list[tuple[int, int]]]:
        """Per node its (edge index, column) pairs."""
        e = enc.tolist()
        out = []
        for node in range(self.steps):
            pairs = []
            for slot in (0, 2):
                j, o = e[4 * node + slot], e[4 * node + slot + 1]
                edge = self._offset[node] + j
                pairs.append((edge, self.allowed[kind][edge][o]))
            out.append(pairs)
        return out

    def weights(self, encs: Encoding, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per node its two sampled edges one-hot on their ops; every other edge all zero."""
        out = {}
        for kind in self.kinds:
            w = torch.zeros(like[kind].shape, dtype=torch.float64)
            for pairs in self._pairs(encs[kind], kind):
                for edge, col in pairs:
                    w[edge, col] = 1.0
            out[kind] = w.to(like[kind])
        return out

    def genotype(self, encs: Encoding) -> Genotype:
        """Per node its two (op, input) pairs, the lower input first."""
        cells = {}
        for kind in self.kinds:
            gene = []
            for pairs in self._pairs(encs[kind], kind):
                for edge, col in sorted(pairs):
                    gene.append((self.edge_ops[kind][edge][col], self.edges[edge][0]))
            cells[kind] = gene
        concat = list(range(2 + self.steps - self.multiplier, self.steps + 2))
        return Genotype(cells["normal"], concat, cells["reduce"], concat)


class OpPerRowCodec(PathCodec):
    """One op index per alpha row of a single cell type: NB201's edges, the two-input
    backbone's nodes (whose inputs are fixed)."""

    def __init__(self, kind: str, length: int, op_names, allowed: list[int], space: str):
        if not allowed:
            raise ValueError(f"the {space} supernet has no op to sample")
        self.kinds, self.kind = (kind,), kind
        self.op_names, self.allowed = op_names, allowed
        self.length = length
        self.lo = torch.zeros(self.length, dtype=torch.int64)
        self.hi = torch.full((self.length,), len(self.allowed) - 1, dtype=torch.int64)
        self.genes = torch.arange(self.length, dtype=torch.int64).reshape(-1, 1)
        self.groups = [[e] for e in range(self.length)]

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        """A uniform op per row."""
        return torch.randint(len(self.allowed), (self.length,), generator=gen, dtype=torch.int64)

    def weights(self, encs: Encoding, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every row one-hot on its op."""
        w = torch.zeros(like[self.kind].shape, dtype=torch.float64)
        for e, o in enumerate(encs[self.kind].tolist()):
            w[e, self.allowed[o]] = 1.0
        return {self.kind: w.to(like[self.kind])}

    def ops(self, encs: Encoding) -> tuple[str, ...]:
        """The op name of every row."""
        return tuple(self.op_names[self.allowed[o]] for o in encs[self.kind].tolist())

    def encode_ops(self, ops, genotype) -> Encoding:
        """The encoding of per-row op names (a ValueError for an op the codec does not sample)."""
        try:
            codes = [self.allowed.index(self.op_names.index(o)) for o in ops]
        except ValueError:
            raise ValueError(f"{genotype} uses an op this supernet does not sample") from None
        return {self.kind: torch.tensor(codes, dtype=torch.int64)}


class NB201Codec(OpPerRowCodec):
    """One op index per edge for the NB201 cell (`none` included unless excluded)."""

    def __init__(self, model: NB201SuperNet, sample_none: bool = True):
        allowed = _allowed_ops(model.op_names, sample_none)
        super().__init__("cell", len(NB201_EDGES), model.op_names, allowed, "NB201")

    def genotype(self, encs: Encoding) -> NB201Genotype:
        """The NB201 cell of the encoding."""
        return NB201Genotype(self.ops(encs))

    def encode(self, genotype: NB201Genotype) -> Encoding:
        """Inverse of `genotype`."""
        return self.encode_ops(genotype.ops, genotype)


class PairCodec(OpPerRowCodec):
    """One op per node for the two-input backbone (`pair_rnn`, language model or forecaster);
    `none` is never sampled (the derivation never picks it)."""

    def __init__(self, model, sample_none: bool = True):
        del sample_none  # `none` is not an op of a final two-input cell
        allowed = _allowed_ops(model.op_names, sample_none=False)
        super().__init__("rnn", model.steps, model.op_names, allowed, "two-input RNN")
        self.second, self.output = model.core.second, model.core.output

    def genotype(self, encs: Encoding) -> PairRNNGenotype:
        """The final two-input cell of the encoding."""
        return PairRNNGenotype(self.ops(encs), self.second, self.output)

    def encode(self, genotype: PairRNNGenotype) -> Encoding:
        """Inverse of `genotype`."""
        return self.encode_ops(genotype.ops, genotype)


class RNNCodec(PathCodec):
    """`[op, in]` per node for the DARTS RNN cell (EN²AS' RNN encoding).

    Node i (1-based) takes one input in [0, i-1] (0: the highway node s0) and one activation
    among the non-`none` ops: `none` is never sampled, as the DARTS RNN derivation never picks
    it (so `search.path_sample_none` does not apply here).
    """

    def __init__(self, model: DartsRNNSuperNet, sample_none: bool = True):
        del sample_none  # `none` is not an op of a final RNN cell
        self.kinds = ("rnn",)
        self.steps = model.steps
        self.op_names = model.op_names
        self.allowed = _allowed_ops(model.op_names, sample_none=False)
        if not self.allowed:
            raise ValueError("the DARTS RNN supernet has no activation to sample")
        self.n_ops = len(self.allowed)
        self.length = 2 * self.steps
        hi = []
        for node in range(1, self.steps + 1):
            hi += [self.n_ops - 1, node - 1]
        self.hi = torch.tensor(hi, dtype=torch.int64)
        self.lo = torch.zeros(self.length, dtype=torch.int64)
        self.genes = torch.arange(self.length, dtype=torch.int64).reshape(-1, 2)
        self.groups = [[n] for n in range(self.steps)]

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        """Per node a uniform activation and a uniform predecessor."""
        out = []
        for node in range(1, self.steps + 1):
            op = int(torch.randint(self.n_ops, (1,), generator=gen))
            j = int(torch.randint(node, (1,), generator=gen))
            out += [op, j]
        return torch.tensor(out, dtype=torch.int64)

    def weights(self, encs: Encoding, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per node its one incoming edge one-hot on its activation; every other edge zero."""
        w = torch.zeros(like["rnn"].shape, dtype=torch.float64)
        e = encs["rnn"].tolist()
        for node in range(1, self.steps + 1):
            op, j = e[2 * node - 2], e[2 * node - 1]
            w[edge_offset(node) + j, self.allowed[op]] = 1.0
        return {"rnn": w.to(like["rnn"])}

    def genotype(self, encs: Encoding) -> RNNGenotype:
        """The final cell of the encoding: per node (activation, input); concat nodes 1..steps."""
        e = encs["rnn"].tolist()
        recurrent = [
            (self.op_names[self.allowed[e[2 * n]]], e[2 * n + 1]) for n in range(self.steps)
        ]
        return RNNGenotype(recurrent, list(range(1, self.steps + 1)))

    def encode(self, genotype: RNNGenotype) -> Encoding:
        """Inverse of `genotype` (a ValueError for an op the codec does not sample)."""
        out = []
        for op, j in genotype.recurrent:
            if op not in self.op_names or self.op_names.index(op) not in self.allowed:
                raise ValueError(f"{genotype} uses an op this supernet does not sample: {op!r}")
            out += [self.allowed.index(self.op_names.index(op)), int(j)]
        return {"rnn": torch.tensor(out, dtype=torch.int64)}


# Codecs by supernet class name, so a new space registers its own.
CODECS: Registry = Registry("single-path codec")
CODECS.add("DartsSuperNet", DartsCodec)
CODECS.add("NB201SuperNet", NB201Codec)
CODECS.add("DartsRNNSuperNet", RNNCodec)
CODECS.add("PairRNNArch", PairCodec)  # both two-input supernets (LM, forecaster)


def path_codec(model: nn.Module, sample_none: bool = True) -> PathCodec:
    """The codec of a supernet, found by its class (or a base class) name."""
    for cls in type(model).__mro__:
        if cls.__name__ in CODECS:
            return CODECS.get(cls.__name__)(model, sample_none)
    raise TypeError(
        f"single-path sampling has no codec for {type(model).__name__}; "
        f"known supernets: {', '.join(CODECS.names())}"
    )


def arch_hash(key: str) -> int:
    """A stable signed 64-bit hash of an architecture's canonical text."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------

RewardFn = Callable[[Encoding], float]

# name -> factory(codec, search_cfg, seed) of an object with
#   needs_reward: bool
#   sample(reward: RewardFn | None) -> (Encoding, info: dict[str, float])
#   metrics() -> dict, state_dict() -> dict, load_state_dict(dict)
SAMPLERS: Registry = Registry("single-path sampler")


@SAMPLERS.register("uniform")
class UniformSampler:
    """Every step a uniformly random architecture (SPOS): per cell type, independently."""

    needs_reward = False

    def __init__(self, codec: PathCodec, cfg, seed: int):
        self.codec = codec
        self.gen = torch.Generator().manual_seed(seed)

    def sample(self, reward: RewardFn | None = None) -> tuple[Encoding, dict[str, float]]:
        """A uniform architecture; no extra information."""
        del reward
        return self.codec.sample_all(self.gen), {}

    def metrics(self) -> dict:
        """Nothing to report."""
        return {}

    def state_dict(self) -> dict:
        """The generator state."""
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict."""
        self.gen.set_state(state["gen"])


class ImagePathScores:
    """Images: scores with BN on batch statistics (`SinglePathSearch.score`); the reward is the
    accuracy as a fraction."""

    @staticmethod
    def evaluate(search: SinglePathSearch, encs: Encoding, batches) -> dict[str, float]:
        """valid_loss and valid_acc (%) of `encs` over `batches`."""
        correct, loss_sum, n = search.score(encs, batches)
        return {"valid_loss": loss_sum / max(n, 1), "valid_acc": 100.0 * correct / max(n, 1)}

    @staticmethod
    def reward(search: SinglePathSearch, encs: Encoding, batches) -> float:
        """Accuracy in [0, 1], higher is better."""
        correct, _, n = search.score(encs, batches)
        return correct / max(n, 1)


class ObjectivePathScores:
    """Other tasks (language models): the objective's own evaluation of the path's one-hot
    weights (eval mode; the LM carries the hidden state over the consecutive segments); the
    reward is exp(-loss) (1 / perplexity for the LM), in (0, 1], higher is better."""

    @staticmethod
    def evaluate(search: SinglePathSearch, encs: Encoding, batches) -> dict[str, float]:
        """The objective's valid_loss and valid_<headline> of `encs` over `batches`."""
        with torch.no_grad():
            return search.objective.evaluate(search.model, search.path_weights(encs), batches)

    @staticmethod
    def reward(search: SinglePathSearch, encs: Encoding, batches) -> float:
        """exp(-valid_loss): a lower loss is a higher reward."""
        loss = ObjectivePathScores.evaluate(search, encs, batches)["valid_loss"]
        return math.exp(-loss)


# How a single path is scored (evaluation, NSR-ES reward), by objective class name (or a base
# class's): image scores use batch statistics, since the running BN statistics of a
# single-path supernet mix every path trained so far.
PATH_SCORES: Registry = Registry("single-path scoring")
PATH_SCORES.add("ImageObjective", ImagePathScores)
PATH_SCORES.add("Objective", ObjectivePathScores)


def path_scores(objective: Objective):
    """The single-path scoring of an objective, found by its class (or a base class) name."""
    for cls in type(objective).__mro__:
        if cls.__name__ in PATH_SCORES:
            return PATH_SCORES.get(cls.__name__)
    raise TypeError(f"no single-path scoring for objective {type(objective).__name__}")


class CurrentPath:
    """A stand-in `ArchParameters.projection`: `arch.weights()` gives the one-hot weights of the
    strategy's current architecture (what the loop logs and diagnoses), not of the alphas."""

    def __init__(self, search: SinglePathSearch):
        self.search = search

    def apply(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The current architecture's one-hot weights (like `weights`)."""
        return self.search.codec.weights(self.search.current_path(), weights)


class SinglePathSearch:
    """One-shot single-path supernet training: per step, sample an architecture (the sampler
    named `sampler_name`) and take one SGD step on its weights only.

    The weight learning rate follows DARTS' cosine schedule by epoch (scaled per batch by the
    objective, as in DartsSearch: the LM's segment length). The `objective` (default: image
    classification) gives the loss and metrics of a step; `PATH_SCORES` how a path is
    evaluated. `genotype()` is the architecture trained last; `arch_metrics()` reports how many
    distinct architectures were trained (in all and this epoch) and the sampler's statistics
    (mean novelty, ...).
    """

    sampler_name = "uniform"

    def __init__(
        self,
        model: nn.Module,
        arch: ArchParameters,
        cfg,
        steps_per_epoch: int = 1,
        objective: Objective | None = None,
    ):
        if distributed.is_distributed():
            raise RuntimeError(
                f"search.strategy = {cfg.strategy!r} runs in a single process; start it "
                "without torchrun"
            )
        self.model, self.arch, self.cfg = model, arch, cfg
        self.objective = objective if objective is not None else ImageObjective()
        self.scores = path_scores(self.objective)
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.codec = path_codec(model, cfg.path_sample_none)
        # Drawn from the seeded global generator: the run's seed fixes the sampler's stream.
        seed = int(torch.randint(0, 2**62, (1,)).item())
        self.sampler = SAMPLERS.get(self.sampler_name)(self.codec, cfg, seed)
        self.w_optimizer = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.w_lr,
            momentum=cfg.w_momentum,
            weight_decay=cfg.w_weight_decay,
        )
        self.epoch, self.lr = 0, cfg.w_lr
        self.current: Encoding | None = None
        self.seen: set[int] = set()
        self.seen_epoch: set[int] = set()
        self.info_sums: dict[str, float] = {}
        self.info_counts: dict[str, int] = {}
        arch.projection = CurrentPath(self)

    def on_epoch_start(self, epoch: int) -> None:
        """Set the epoch's learning rate; reset the per-epoch counts (and the LM's streams)."""
        self.epoch = epoch
        self.lr = cosine_lr(epoch, self.cfg.epochs, self.cfg.w_lr, self.cfg.w_lr_min)
        for g in self.w_optimizer.param_groups:
            g["lr"] = self.lr
        self.objective.on_epoch_start(epoch)
        self.seen_epoch = set()
        self.info_sums, self.info_counts = {}, {}

    def current_path(self) -> Encoding:
        """The architecture trained last."""
        if self.current is None:
            raise RuntimeError(
                f"search.strategy = {self.cfg.strategy!r} has not trained an architecture yet; "
                "a single-path supernet has no learned edge weights to read a genotype from "
                "(select one with `diffnas select RUN_DIR --method sample_rank`)"
            )
        return self.current

    def path_weights(self, encs: Encoding) -> dict[str, torch.Tensor]:
        """One-hot edge weights of `encs` on the supernet's device and dtype."""
        like = {k: a.detach() for k, a in self.arch.alphas().items()}
        return self.codec.weights(encs, like)

    @torch.no_grad()
    def score(self, encs: Encoding, batches) -> tuple[float, float, int]:
        """(correct, summed loss, n) of architecture `encs` over `batches` with inherited
        weights, BN on batch statistics, nothing of the supernet changed."""
        weights = self.path_weights(encs)
        correct, loss_sum, n = 0.0, 0.0, 0
        with batch_statistics(self.model):
            for x, y in batches:
                if len(y) == 0:
                    continue
                logits = self.model(x, weights)
                correct += float((logits.argmax(-1) == y).sum())
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                n += len(y)
        return correct, loss_sum, n

    def _reward(self, next_val) -> RewardFn:
        """The path's reward under inherited weights (`PATH_SCORES`: accuracy as a fraction,
        LM: 1 / perplexity) on `novelty_reward_batches` val batches, drawn once per step, on
        first use."""
        batches: list = []

        def reward(encs: Encoding) -> float:
            if not batches:
                for _ in range(self.cfg.novelty_reward_batches):
                    batches.append(next_val() if callable(next_val) else next_val)
            return self.scores.reward(self, encs, batches)

        return reward

    def step(self, train_batch, next_val) -> dict[str, float]:
        """Sample an architecture and take one weight step on it alone.

        `next_val` (a val batch, or a function returning the next one) is only drawn from by
        samplers that score candidates (the novelty sampler's performance reward).
        """
        self.model.train()
        reward = self._reward(next_val) if self.sampler.needs_reward else None
        encs, info = self.sampler.sample(reward)
        self.current = encs
        # The objective may scale this step's learning rate (LM: by the segment's length).
        scale = self.objective.lr_scale(train_batch)
        loss, out = self.objective.loss(
            self.model,
            self.path_weights(encs),
            train_batch,
            role="train",
            advance=True,
            train_step=True,
        )
        self.w_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Unsampled ops have no gradient (None): SGD leaves them, their momentum and their
        # weight decay alone, and the clipping norm is the path's.
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if scale != 1.0:
            for g in self.w_optimizer.param_groups:
                g["lr"] = self.lr * scale
        self.w_optimizer.step()
        if scale != 1.0:
            for g in self.w_optimizer.param_groups:
                g["lr"] = self.lr
        h = arch_hash(self.codec.key(encs))
        self.seen.add(h)
        self.seen_epoch.add(h)
        for k, v in info.items():
            self.info_sums[k] = self.info_sums.get(k, 0.0) + v
            self.info_counts[k] = self.info_counts.get(k, 0) + 1
        return self.objective.step_metrics(loss, out, train_batch)

    def evaluate(self, batches) -> dict[str, float]:
        """valid_loss and valid_<headline> of the current architecture (inherited weights)
        over `batches`, scored as `PATH_SCORES` says for the objective."""
        return self.scores.evaluate(self, self.current_path(), batches)

    def genotype(self):
        """The genotype of the architecture trained last."""
        return self.codec.genotype(self.current_path())

    def arch_metrics(self) -> dict:
        """Distinct architectures trained (in all and this epoch), the sampler's epoch means
        (`mean_novelty`, ...) and its state (archive filling, ...)."""
        out = {"distinct_archs": len(self.seen), "distinct_archs_epoch": len(self.seen_epoch)}
        out.update({f"mean_{k}": v / self.info_counts[k] for k, v in self.info_sums.items()})
        out.update(self.sampler.metrics())
        return out

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: weights, optimiser, sampler (archive, ES and
        generator state), the current architecture and the counts."""
        return {
            "model": self.model.state_dict(),
            "arch": self.arch.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "epoch": self.epoch,
            "sampler": self.sampler.state_dict(),
            "current": None if self.current is None else dict(self.current),
            "seen": torch.tensor(sorted(self.seen), dtype=torch.int64),
            "seen_epoch": torch.tensor(sorted(self.seen_epoch), dtype=torch.int64),
            "info_sums": dict(self.info_sums),
            "info_counts": dict(self.info_counts),
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict."""
        self.model.load_state_dict(state["model"])
        self.arch.load_state_dict(state["arch"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.epoch = state["epoch"]
        self.lr = self.w_optimizer.param_groups[0]["lr"]
        self.sampler.load_state_dict(state["sampler"])
        cur = state["current"]
        self.current = None if cur is None else {k: v.to(torch.int64) for k, v in cur.items()}
        self.seen = set(state["seen"].tolist())
        self.seen_epoch = set(state["seen_epoch"].tolist())
        self.info_sums = dict(state["info_sums"])
        self.info_counts = dict(state["info_counts"])


class RandomPathSearch(SinglePathSearch):
    """Uniform random single-path sampling (SPOS-style): the baseline of EN²AS."""

    sampler_name = "uniform"
