"""Growing the supernet during the search by network morphism (ours: docs/GROWING.md).

A grower is a component of `DartsSearch` (`search.grower`, registry `GROWERS`): at the end of
every epoch, after the validation pass and before the checkpoint, `on_epoch_end` asks its
trigger whether to grow; a growth step adds one intermediate node to every cell through the
space's growth interface (`diffnas.spaces.growth`: `num_nodes`, `growth_blocker`, `grow`),
which is function-preserving, and then carries the optimisers over:

- a weight whose tensor grew (e.g. a 1x1 preprocessing conv with new zero input channels) takes
  the place of the old one in the SGD param group, and its momentum buffer is the old one
  zero-padded (new entries have no history);
- new modules' parameters join the first SGD param group (so they follow its learning rate);
- the alphas gain rows for the new edges (initialised as at the start of the search), and
  their Adam state is the old one zero-padded with `step` kept: old rows continue exactly as if
  nothing happened. New rows then see Adam's bias correction of step t, not 1, so their first
  updates are larger than a fresh Adam's would be (about lr * (1 - beta1) / sqrt(1 - beta2)).

Triggers (`GROWTH_TRIGGERS`): `every` G epochs, or `plateau`: the smoothed validation loss
improved by less than a relative threshold over P epochs. Modes (`GROWTH_MODES`):
`grow_then_prune` derives once at the end (the usual DARTS rule); `grow_and_prune` prunes the
older nodes right after each growth (`PRUNE_RULES`, default `magnitude`: the space's own
derivation rule on the current edge weights), through the alphas' masks, so the supernet
deepens while its older nodes stay at their derived size.

The size is part of the state: `state_dict` holds the epochs at which the supernet grew, and
`load_state_dict` replays those growth steps (same seeds, same modules) before the strategy
loads the model, alphas and optimisers, so a resumed run continues exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from diffnas.arch import ACTIVATIONS
from diffnas.registry import Registry
from diffnas.runs import distributed
from diffnas.runs.config import ConfigError
from diffnas.spaces.growth import pad_to

GROWERS: Registry = Registry("grower")
GROWTH_TRIGGERS: Registry = Registry("growth trigger")
GROWTH_MODES: Registry = Registry("growth mode")
PRUNE_RULES: Registry = Registry("growth prune rule")


# ---------------------------------------------------------------------------------------------
# Optimiser surgery
# ---------------------------------------------------------------------------------------------


def replace_param(optimizer: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter) -> None:
    """Put `new` where `old` is in the optimiser; its per-element state (momentum, Adam moments)
    becomes the old state zero-padded to the new shape, scalar state (Adam's `step`) is kept."""
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
                state = optimizer.state.pop(old, None)
                if state:
                    optimizer.state[new] = {
                        k: pad_to(v, new.shape)
                        if torch.is_tensor(v) and v.dim() > 0 and v.shape == old.shape
                        else v
                        for k, v in state.items()
                    }
                return
    raise ValueError(f"replace_param: a parameter of shape {tuple(old.shape)} is not optimised")


def add_params(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    """Append new parameters to the first param group (its hyperparameters and learning rate);
    their state starts empty, as for any parameter before its first step."""
    known = {id(p) for g in optimizer.param_groups for p in g["params"]}
    optimizer.param_groups[0]["params"].extend(p for p in params if id(p) not in known)


@torch.no_grad()
def grow_alphas(
    arch, shapes: dict[str, tuple[int, ...]], init_std: float, generator: torch.Generator
) -> list[tuple[nn.Parameter, nn.Parameter]]:
    """Append rows to every alpha tensor (and ones to its mask) up to `shapes`, initialised as
    `ArchParameters` does; returns the (old, new) alpha parameters."""
    act = ACTIVATIONS.get(arch.activation)
    replaced = []
    for name, shape in shapes.items():
        old = getattr(arch, f"alphas_{name}")
        shape = tuple(shape)
        if tuple(old.shape) == shape:
            continue
        if shape[1:] != tuple(old.shape[1:]) or shape[0] < old.shape[0]:
            raise ValueError(
                f"alphas_{name}: growth must append rows, got {tuple(old.shape)} -> {shape}"
            )
        rows = (shape[0] - old.shape[0], *shape[1:])
        extra = act.init_center(shape[-1]) + init_std * torch.randn(rows, generator=generator)
        new = nn.Parameter(
            torch.cat([old.detach(), extra.to(old)]), requires_grad=old.requires_grad
        )
        setattr(arch, f"alphas_{name}", new)
        mask = getattr(arch, f"mask_{name}")
        setattr(arch, f"mask_{name}", torch.cat([mask, mask.new_ones(rows)]))
        replaced.append((old, new))
    return replaced


@torch.no_grad()
def active_edges(arch) -> int:
    """Edges (alpha rows, summed over cell types) with a non-zero weight: the ones that run."""
    return sum(int((w != 0).any(dim=-1).sum().item()) for w in arch.weights().values())


# ---------------------------------------------------------------------------------------------
# Triggers
# ---------------------------------------------------------------------------------------------


class _Trigger:
    """Asked once per epoch end, with that epoch's validation loss; told when growth happened."""

    def should_grow(self, epoch: int, valid_loss: float) -> bool:
        """Whether to grow now, after epoch `epoch` (0-based)."""
        raise NotImplementedError

    def grew(self) -> None:
        """Called after each growth step."""

    def state_dict(self) -> dict:
        """The trigger's state, for exact resume."""
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict."""
        vars(self).update(state)


@GROWTH_TRIGGERS.register("every")
class EveryTrigger(_Trigger):
    """Grow after every `search.grow_every`-th epoch (epochs G, 2G, ...)."""

    def __init__(self, cfg):
        self.every = cfg.grow_every

    def should_grow(self, epoch: int, valid_loss: float) -> bool:
        return (epoch + 1) % self.every == 0


@GROWTH_TRIGGERS.register("plateau")
class PlateauTrigger(_Trigger):
    """Grow when the smoothed validation loss improved by less than a relative threshold over
    the last P epochs since the last growth: s_t = beta s_(t-1) + (1 - beta) L_t, grow when
    s_(t-P) - s_t < threshold * |s_(t-P)| (P = `grow_patience`, beta = `grow_smoothing`).

    The smoothing carries across a growth (the function, and so the loss, is unchanged by it);
    the window restarts at the growth epoch, so two growths are at least P epochs apart."""

    def __init__(self, cfg):
        self.patience = cfg.grow_patience
        self.threshold = cfg.grow_threshold
        self.beta = cfg.grow_smoothing
        self.smoothed: float | None = None
        self.window: list[float] = []

    def should_grow(self, epoch: int, valid_loss: float) -> bool:
        loss = float(valid_loss)
        self.smoothed = (
            loss if self.smoothed is None else self.beta * self.smoothed + (1 - self.beta) * loss
        )
        self.window.append(self.smoothed)
        if len(self.window) <= self.patience:
            return False
        old = self.window[-1 - self.patience]
        # A NaN loss compares False: a diverged search does not grow.
        return old - self.smoothed < self.threshold * abs(old)

    def grew(self) -> None:
        self.window = self.window[-1:]


# ---------------------------------------------------------------------------------------------
# Modes and prune rules
# ---------------------------------------------------------------------------------------------


@PRUNE_RULES.register("magnitude")
@torch.no_grad()
def magnitude_prune(search, rows: dict[str, int], ops_too: bool) -> None:
    """Prune the first `rows[kind]` alpha rows (the older nodes' edges) by the space's derivation
    rule on the current edge weights (DARTS CNN: each node keeps its 2 inputs with the strongest
    non-`none` op): dropped edges get mask 0; with `ops_too`, kept edges keep only their chosen op.

    The masked weights are not renormalised (softmax over all ops, times the mask): the kept
    edges keep the weight they had, and their alphas go on learning.
    """
    arch, weights = search.arch, search.arch.weights()
    projected = search.model.project(weights)
    # A space whose nodes have fixed inputs (pair_rnn: one alpha row per node) prunes ops.
    ops_too = ops_too or getattr(search.model, "fixed_edges", False)
    for kind, n in rows.items():
        mask = getattr(arch, f"mask_{kind}")
        keep = projected[kind][:n] != 0
        if ops_too:
            mask[:n] *= keep.to(mask)
        else:
            mask[:n] *= keep.any(dim=-1, keepdim=True).to(mask)


class GrowThenPrune:
    """Grow during the search; the one derivation at the end is the space's usual rule."""

    def __init__(self, cfg):
        pass

    def after_growth(self, search, old_rows: dict[str, int]) -> None:
        """Called after each growth with the alpha rows the supernet had before it."""


class GrowAndPrune(GrowThenPrune):
    """After each growth, prune the older nodes (`search.grow_prune`, `grow_prune_ops`)."""

    def __init__(self, cfg):
        self.rule = PRUNE_RULES.get(cfg.grow_prune)
        self.ops_too = cfg.grow_prune_ops

    def after_growth(self, search, old_rows: dict[str, int]) -> None:
        self.rule(search, old_rows, self.ops_too)


GROWTH_MODES.add("grow_then_prune", GrowThenPrune)
GROWTH_MODES.add("grow_and_prune", GrowAndPrune)


# ---------------------------------------------------------------------------------------------
# Growers
# ---------------------------------------------------------------------------------------------


@GROWERS.register("none")
class NoGrower:
    """A fixed-size search (the default): nothing grows, nothing is logged, no state."""

    def __init__(self, cfg, search):
        pass

    def on_epoch_start(self, epoch: int) -> None:
        """Called at the start of every epoch (nothing to do for the growers here)."""

    def on_step_start(self) -> None:
        """Called before every search step (alpha and weight), after `search.epoch_step` counts
        the steps already taken this epoch."""

    def on_epoch_end(self, epoch: int, record: dict) -> dict:
        """After the epoch's validation pass: grow if due; extra metrics for the epoch record."""
        return {}

    def state_dict(self) -> dict:
        """The grower's state (the size of the supernet), for exact resume."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Rebuild the supernet at the saved size; call before loading model and optimisers."""


@GROWERS.register("morphism")
class MorphismGrower(NoGrower):
    """Grows every cell by one intermediate node, function-preserving, until
    `search.grow_max_nodes`; the start size is the space's (`space.steps`)."""

    def __init__(self, cfg, search):
        model = search.model
        where = f"search.grower = {cfg.grower!r}"
        if not callable(getattr(model, "grow", None)):
            raise ConfigError(
                f"{where}: the search space (space.name) builds a {type(model).__name__}, which "
                "has no growth rule (the spaces darts, darts_rnn and pair_rnn have one); set "
                "search.grower = 'none'"
            )
        reason = model.growth_blocker()
        if reason is not None:
            raise ConfigError(f"{where}: this {type(model).__name__} cannot grow: {reason}")
        if model.num_nodes() >= cfg.grow_max_nodes:
            raise ConfigError(
                f"{where}: the supernet starts with {model.num_nodes()} nodes (space.steps), "
                f"not below search.grow_max_nodes = {cfg.grow_max_nodes}; a growing search "
                "starts small: set space.steps (and space.multiplier) below it"
            )
        if distributed.is_distributed():
            raise ConfigError(f"{where}: a growing search runs in a single process (no torchrun)")
        if cfg.regularizer == "admm":
            raise ConfigError(
                f"{where} with search.regularizer = 'admm': ADMM's Z and U have the alphas' "
                "shapes and cannot follow a growth; use 'prox' or 'none'"
            )
        self.search, self.cfg = search, cfg
        self.max_nodes = cfg.grow_max_nodes
        self.ramp_epochs = cfg.grow_ramp_epochs
        self.trigger = GROWTH_TRIGGERS.get(cfg.grow_trigger)(cfg)
        self.mode = GROWTH_MODES.get(cfg.grow_mode)(cfg)
        # build_search seeds everything before building the strategy, so this is run.seed on a
        # fresh run and on a resumed one alike; it seeds each growth step's new modules.
        self.seed = torch.initial_seed()
        self.grown_at: list[int] = []  # the epochs after which the supernet grew

    def growth_seed(self, index: int) -> int:
        """The seed of growth step `index` (0-based): new modules and new alphas."""
        return (self.seed * 1_000_003 + 7919 * (index + 1)) % 2**63

    def grow(self) -> dict[str, int]:
        """One growth step with the optimisers carried over; returns the alpha rows before it."""
        s, index = self.search, len(self.grown_at)
        old_rows = {k: a.shape[0] for k, a in s.arch.alphas().items()}
        seed = self.growth_seed(index)
        growth = s.model.grow(seed)
        for old, new in growth.replaced:
            replace_param(s.w_optimizer, old, new)
        add_params(s.w_optimizer, growth.added)
        init_std = 0.0 if self.cfg.fix_alpha else self.cfg.alpha_init_std
        gen = torch.Generator().manual_seed(seed)
        for old, new in grow_alphas(s.arch, s.model.arch_shapes(), init_std, gen):
            replace_param(s.a_optimizer, old, new)
        return old_rows

    def presence_at(self, grown_after: int) -> float:
        """The presence now of a node added after epoch `grown_after`: linear in the steps
        taken since, from 1 / (R * steps per epoch) at the first step to 1 after R epochs
        (R = `grow_ramp_epochs`; 0: 1 at once). A pure function of (epoch, step), so a resumed
        run ramps exactly as an uninterrupted one."""
        s = self.search
        if self.ramp_epochs == 0:
            return 1.0
        since = (s.epoch - grown_after - 1) * s.steps_per_epoch + s.epoch_step
        return min(1.0, (since + 1) / (self.ramp_epochs * s.steps_per_epoch))

    def on_step_start(self) -> None:
        # The recurrent cells read new nodes through a presence (`NodePresence`); the CNN
        # morphism needs none (zero reader weights), and its supernet has no set_presence.
        model = self.search.model
        if not self.grown_at or not hasattr(model, "set_presence"):
            return
        first = model.num_nodes() - len(self.grown_at)
        for i, epoch in enumerate(self.grown_at):
            node = first + i
            if model.presence()[node] < 1.0:
                model.set_presence(node, self.presence_at(epoch))

    def on_epoch_end(self, epoch: int, record: dict) -> dict:
        s = self.search
        out = {"nodes": s.model.num_nodes(), "active_edges": active_edges(s.arch), "grew": False}
        if hasattr(s.model, "presence"):  # a recurrent cell: how far its newest node ramped in
            out["presence"] = s.model.presence()
        if s.model.num_nodes() >= self.max_nodes:
            return out
        # Every epoch's loss feeds the trigger (its smoothing), grown or not.
        if self.trigger.should_grow(epoch, record["valid_loss"]):
            old_rows = self.grow()
            self.grown_at.append(epoch)
            self.trigger.grew()
            self.mode.after_growth(s, old_rows)
            out["grew"] = True
        return out

    def state_dict(self) -> dict:
        state = {
            "grown_at": list(self.grown_at),
            "seed": self.seed,
            "trigger": self.trigger.state_dict(),
        }
        if hasattr(self.search.model, "presence"):  # a recurrent cell ramping a node in
            state["presence"] = self.search.model.presence()
        return state

    def load_state_dict(self, state: dict) -> None:
        saved = list(state.get("grown_at", []))
        if saved[: len(self.grown_at)] != self.grown_at:
            raise ValueError(
                f"cannot load a grower state that grew after epochs {saved} into one that grew "
                f"after {self.grown_at}"
            )
        self.seed = state.get("seed", self.seed)
        # Replay the missing growth steps (shapes and modules); the strategy then loads the
        # values (weights, alphas, masks, optimiser state) over them.
        for epoch in saved[len(self.grown_at) :]:
            self.grow()
            self.grown_at.append(epoch)
        self.trigger.load_state_dict(state.get("trigger", self.trigger.state_dict()))
        for node, value in enumerate(state.get("presence", [])):
            self.search.model.set_presence(node, value)
