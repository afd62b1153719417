"""Published genotypes by name: `GENOTYPES.get("DARTS_V2")`.

Each entry records where the cell comes from and the parameter count its source reports for the
CIFAR-10 evaluation network (C=36, L=20, without the auxiliary head), in millions.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffnas.registry import Registry
from diffnas.spaces.genotypes import (
    Genotype,
    NB201Genotype,
    RNNGenotype,
    validate_darts,
    validate_rnn,
)

_CONCAT = [2, 3, 4, 5]


@dataclass(frozen=True)
class Published:
    """A genotype with its provenance and the parameter count its source reports."""

    genotype: Genotype | NB201Genotype | RNNGenotype
    source: str
    params_m: float | None = None  # None where the source gives no figure


def _darts(normal, reduce) -> Genotype:
    return validate_darts(Genotype(normal, _CONCAT, reduce, _CONCAT))


GENOTYPES: Registry = Registry("published genotype")

_DARTS = "DARTS paper (Liu et al., ICLR 2019), cells from quark0/darts genotypes.py"
GENOTYPES.add(
    "DARTS_V1",
    Published(
        _darts(
            [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
             ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
            [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
             ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
        ),
        _DARTS + "; first order (paper: 3.00 +- 0.14 % error)",
        3.3,
    ),
)  # fmt: skip
GENOTYPES.add(
    "DARTS_V2",
    Published(
        _darts(
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
             ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
            [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
             ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
        ),
        _DARTS + "; second order (paper: 2.76 +- 0.09 % error)",
        3.3,
    ),
)  # fmt: skip

# The DARTS RNN cells (quark0/darts rnn/genotypes.py); params_m is the paper's PTB network
# (850 units, tied embedding), not a CIFAR-10 one.
_DARTS_RNN = "DARTS paper (Liu et al., ICLR 2019), RNN cells from quark0/darts rnn/genotypes.py"
GENOTYPES.add(
    "DARTS_RNN_V1",
    Published(
        validate_rnn(RNNGenotype(
            [("relu", 0), ("relu", 1), ("tanh", 2), ("relu", 3), ("relu", 4), ("identity", 1),
             ("relu", 5), ("relu", 1)],
            list(range(1, 9)),
        )),
        _DARTS_RNN + "; first order (paper PTB: 60.2 valid / 57.6 test perplexity)",
        23.0,
    ),
)  # fmt: skip
GENOTYPES.add(
    "DARTS_RNN_V2",
    Published(
        validate_rnn(RNNGenotype(
            [("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2),
             ("sigmoid", 5), ("tanh", 3), ("relu", 5)],
            list(range(1, 9)),
        )),
        _DARTS_RNN + "; second order (paper PTB: 58.1 valid / 55.7 test perplexity)",
        23.0,
    ),
)  # fmt: skip

# DARTS-PT (Wang et al., ICLR 2021), ruocwang/darts-pt sota/cnn/genotypes.py: the four
# DARTS-space seeds of DARTS+PT (paper: 2.61 +- 0.08 % error, 3.0M params on average) and of
# DARTS+PT with fixed alphas; the repository notes each one's parameter count.
_PT = "DARTS-PT paper, ruocwang/darts-pt sota/cnn/genotypes.py"
_PT_CELLS = {
    "darts_pt_s5_0": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("dil_conv_3x3", 1),
         ("skip_connect", 0), ("skip_connect", 2), ("skip_connect", 0), ("max_pool_3x3", 4)],
        [("sep_conv_3x3", 0), ("avg_pool_3x3", 1), ("dil_conv_5x5", 1), ("dil_conv_3x3", 2),
         ("avg_pool_3x3", 0), ("max_pool_3x3", 2), ("sep_conv_3x3", 2), ("skip_connect", 4)],
        2.85,
    ),
    "darts_pt_s5_1": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 0), ("dil_conv_3x3", 4)],
        [("dil_conv_5x5", 0), ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 2),
         ("max_pool_3x3", 1), ("dil_conv_3x3", 3), ("sep_conv_5x5", 0), ("sep_conv_3x3", 4)],
        3.05,
    ),
    "darts_pt_s5_2": (
        [("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("skip_connect", 2), ("dil_conv_3x3", 3), ("max_pool_3x3", 1), ("skip_connect", 2)],
        [("avg_pool_3x3", 0), ("max_pool_3x3", 1), ("avg_pool_3x3", 0), ("sep_conv_3x3", 1),
         ("dil_conv_5x5", 2), ("skip_connect", 3), ("sep_conv_3x3", 2), ("sep_conv_5x5", 4)],
        2.66,
    ),
    "darts_pt_s5_3": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("skip_connect", 2), ("sep_conv_3x3", 1), ("skip_connect", 3)],
        [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("max_pool_3x3", 1), ("skip_connect", 2),
         ("dil_conv_5x5", 1), ("max_pool_3x3", 3), ("sep_conv_5x5", 2), ("skip_connect", 3)],
        3.33,
    ),
    "blank_pt_s5_0": (
        [("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("avg_pool_3x3", 1), ("skip_connect", 3), ("max_pool_3x3", 0), ("avg_pool_3x3", 2)],
        [("skip_connect", 0), ("sep_conv_5x5", 1), ("dil_conv_3x3", 1), ("sep_conv_5x5", 2),
         ("max_pool_3x3", 0), ("skip_connect", 3), ("max_pool_3x3", 0), ("max_pool_3x3", 2)],
        3.04,
    ),
    "blank_pt_s5_1": (
        [("avg_pool_3x3", 0), ("avg_pool_3x3", 1), ("sep_conv_3x3", 0), ("max_pool_3x3", 2),
         ("skip_connect", 2), ("sep_conv_3x3", 3), ("sep_conv_5x5", 0), ("sep_conv_5x5", 1)],
        [("max_pool_3x3", 0), ("dil_conv_5x5", 1), ("sep_conv_3x3", 0), ("skip_connect", 1),
         ("avg_pool_3x3", 2), ("max_pool_3x3", 3), ("sep_conv_5x5", 3), ("sep_conv_5x5", 4)],
        3.15,
    ),
    "blank_pt_s5_2": (
        [("avg_pool_3x3", 0), ("dil_conv_3x3", 1), ("sep_conv_5x5", 0), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 1), ("sep_conv_5x5", 1), ("avg_pool_3x3", 2)],
        [("sep_conv_3x3", 0), ("avg_pool_3x3", 1), ("avg_pool_3x3", 0), ("sep_conv_5x5", 1),
         ("max_pool_3x3", 0), ("sep_conv_5x5", 3), ("max_pool_3x3", 2), ("dil_conv_5x5", 4)],
        2.58,
    ),
    "blank_pt_s5_3": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 1),
         ("max_pool_3x3", 2), ("sep_conv_3x3", 3), ("avg_pool_3x3", 0), ("sep_conv_5x5", 1)],
        [("dil_conv_5x5", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 0), ("dil_conv_3x3", 1),
         ("avg_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0), ("skip_connect", 4)],
        3.40,
    ),
}  # fmt: skip
for _name, (_normal, _reduce, _params) in _PT_CELLS.items():
    _variant = "DARTS+PT (fix alpha)" if _name.startswith("blank") else "DARTS+PT"
    GENOTYPES.add(_name, Published(_darts(_normal, _reduce), f"{_PT}; {_variant}", _params))

# EN²AS (Zhang et al., IJCAI 2020), miaozhang0525/ENNAS_MASTER CNN/genotypes.py. Single-path
# sampling may pick `none` and the same input twice; the final network builds both as written.
_ENNAS = "EN²AS, miaozhang0525/ENNAS_MASTER CNN/genotypes.py"
GENOTYPES.add(
    "ENNAS",
    Published(
        _darts(
            [("sep_conv_5x5", 1), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("sep_conv_3x3", 1),
             ("sep_conv_5x5", 1), ("avg_pool_3x3", 0), ("skip_connect", 0), ("none", 3)],
            [("dil_conv_3x3", 0), ("none", 0), ("dil_conv_3x3", 0), ("avg_pool_3x3", 1),
             ("dil_conv_5x5", 2), ("dil_conv_5x5", 3), ("none", 2), ("sep_conv_3x3", 3)],
        ),
        _ENNAS + "; novelty-driven sampling; the repository's CIFAR-10 training log reports "
        "its parameter count",
        3.08,
    ),
)  # fmt: skip
GENOTYPES.add(
    "ENNAS_PR",
    Published(
        _darts(
            [("skip_connect", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 1),
             ("sep_conv_3x3", 3), ("none", 3), ("none", 3), ("max_pool_3x3", 1)],
            [("dil_conv_3x3", 0), ("sep_conv_3x3", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
             ("avg_pool_3x3", 1), ("none", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 3)],
        ),
        _ENNAS + "; novelty + performance reward",
    ),
)  # fmt: skip

# The best CIFAR-10 cell of NAS-Bench-201 (Dong & Yang, ICLR 2020): 94.37 % test accuracy in the
# official table (200-epoch training).
GENOTYPES.add(
    "NB201_BEST",
    Published(
        NB201Genotype.from_string(
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
            "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
        ),
        "NAS-Bench-201 paper, best CIFAR-10 test accuracy in the official table (94.37 %)",
    ),
)
