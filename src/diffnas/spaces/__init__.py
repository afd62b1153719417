"""Search spaces, chosen by name from `SPACES`.

Each entry builds a supernet from the `[space]` config section. A supernet's `forward(x, weights)`
takes the edge weights as a dict of tensors, `arch_shapes()` gives their shapes, and
`genotype(weights)` applies the space's derivation rule.
"""

from __future__ import annotations

from diffnas.registry import Registry
from diffnas.spaces import darts_rnn, pair_rnn
from diffnas.spaces.darts_cnn import DartsSuperNet, edge_list
from diffnas.spaces.genotypes import DARTS_OPS, NB201_OPS
from diffnas.spaces.nb201 import NB201SuperNet
from diffnas.spaces.robust_darts import ROBUST_DARTS_OP_SETS

SPACES: Registry = Registry("search space")


def _ops(names, drop_none: bool) -> tuple[str, ...]:
    return tuple(o for o in names if not (drop_none and o == "none"))


@SPACES.register("nb201")
def nb201(cfg, in_channels: int, num_classes: int, drop_none: bool = False) -> NB201SuperNet:
    """The NAS-Bench-201 supernet."""
    return NB201SuperNet(
        cfg.C,
        cfg.N,
        in_channels,
        num_classes,
        _ops(NB201_OPS, drop_none),
        cfg.node_bn,
        cfg.derive_none,
    )


class SpaceError(ValueError):
    """A `[space]` setting the space cannot be built with; the message names the keys."""


def _darts_builder(op_sets):
    def build(cfg, in_channels: int, num_classes: int, drop_none: bool = False) -> DartsSuperNet:
        if cfg.multiplier > cfg.steps:
            raise SpaceError(
                f"space.multiplier = {cfg.multiplier} is more than space.steps = {cfg.steps}: a "
                "cell concatenates its last `multiplier` intermediate nodes, so set "
                f"space.multiplier <= {cfg.steps} (or raise space.steps)"
            )
        n_edges = len(edge_list(cfg.steps))
        sets = op_sets or {k: [DARTS_OPS] * n_edges for k in ("normal", "reduce")}
        return DartsSuperNet(
            cfg.C,
            cfg.layers,
            in_channels,
            num_classes,
            cfg.steps,
            cfg.multiplier,
            cfg.stem_multiplier,
            {k: [_ops(ops, drop_none) for ops in v] for k, v in sets.items()},
            cfg.node_bn,
        )

    return build


SPACES.add("darts", _darts_builder(None))
for _name, _sets in ROBUST_DARTS_OP_SETS.items():
    SPACES.add(_name, _darts_builder(_sets))


def _recurrent_space(name: str, models: Registry):
    """A recurrent space whose supernet depends on the task (`models`: task -> factory)."""

    def build(
        cfg,
        in_channels: int,
        num_classes: int,
        drop_none: bool = False,
        task: str = "lm",
        **options,
    ):
        if "lm" not in options:
            raise ValueError(f"the {name} space needs the [lm] config section (lm=cfg.lm)")
        return models.get(task)(cfg, num_classes, drop_none, **options)

    build.__doc__ = (
        f"The {name} search cell in the supernet of `task`: a language model (`lm=cfg.lm`; "
        "`num_classes` is the vocabulary size) or a forecaster (`shape`, `forecast=cfg.forecast`, "
        "`lm=cfg.lm`); `in_channels` is unused."
    )
    # The task each space searches on by default (the key of `diffnas.search.loop.SEARCH_TASKS`),
    # "image" when a factory names none, and the tasks it can search on (`search.task`), its
    # own task alone when it names none.
    build.task = "lm"
    build.tasks = tuple(models.names())
    SPACES.add(name, build)


_recurrent_space("darts_rnn", darts_rnn.RNN_SEARCH_MODELS)
_recurrent_space("pair_rnn", pair_rnn.PAIR_SEARCH_MODELS)


def space_task(name: str) -> str:
    """The task the space `name` searches on: "image", "lm", ..."""
    return getattr(SPACES.get(name), "task", "image")


def space_tasks(name: str) -> tuple[str, ...]:
    """Every task the space `name` can search on (`search.task`), its own first."""
    own = space_task(name)
    return (own, *[t for t in getattr(SPACES.get(name), "tasks", ()) if t != own])


def build_supernet(cfg, in_channels: int, num_classes: int, drop_none: bool = False, **options):
    """The supernet named by `cfg.name` (a `[space]` config section); `drop_none` leaves the
    `none` op out of every edge (for activations such as `clip` that have no use for it);
    `options` go to the space's factory (the LM spaces take `lm=cfg.lm`)."""
    if cfg.name in ROBUST_DARTS_OP_SETS and cfg.steps != 4:
        raise SpaceError(
            f"space.steps = {cfg.steps}: the RobustDARTS space {cfg.name!r} has 4 intermediate "
            "nodes; set space.steps = 4"
        )
    return SPACES.get(cfg.name)(cfg, in_channels, num_classes, drop_none, **options)
