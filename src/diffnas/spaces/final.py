"""Final networks of genotypes, chosen by the genotype's space family from `FINAL_NETWORKS`.

`build_final_network(genotype, train_cfg, in_channels, num_classes)` builds the network that
`diffnas train` trains; `count_params` and `count_macs` measure it as the papers report it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diffnas.registry import Registry
from diffnas.spaces.darts_eval import DartsNetwork
from diffnas.spaces.genotypes import genotype_to_json
from diffnas.spaces.nb201 import NB201Net

FINAL_NETWORKS: Registry = Registry("final network")


class FinalNetworkError(ValueError):
    """A training config that the genotype's network cannot honour; the message says the fix."""


@FINAL_NETWORKS.register("darts")
def darts_network(genotype, cfg, in_channels: int, num_classes: int) -> DartsNetwork:
    """The DARTS evaluation network (stem, `cfg.layers` cells, auxiliary head, drop-path)."""
    return DartsNetwork(
        genotype,
        cfg.C,
        cfg.layers,
        in_channels,
        num_classes,
        auxiliary=cfg.auxiliary_weight > 0,
        stem=cfg.stem,
    )


def _check_nb201(cfg) -> None:
    if cfg.auxiliary_weight > 0 or cfg.drop_path > 0:
        raise FinalNetworkError(
            "the NB201 network has no auxiliary head and no drop-path: set "
            "train.auxiliary_weight=0 and train.drop_path=0 (the NB201 recipe "
            "configs/train_nb201.toml, used when --config is not given, does)"
        )


# Per space family: the `[train]` settings its network cannot honour (none for DARTS).
_CONFIG_CHECKS = {"nb201": _check_nb201}


@FINAL_NETWORKS.register("nb201")
def nb201_network(genotype, cfg, in_channels: int, num_classes: int) -> NB201Net:
    """The NB201 macro network (three stages of `cfg.N` cells)."""
    _check_nb201(cfg)
    return NB201Net(genotype, cfg.C, cfg.N, in_channels, num_classes)


def check_final_config(genotype, cfg) -> None:
    """Raise FinalNetworkError if the genotype's network cannot honour the `[train]` config."""
    check = _CONFIG_CHECKS.get(space_family(genotype))
    if check is not None:
        check(cfg)


def space_family(genotype) -> str:
    """ "darts" or "nb201": the key of the genotype's network in FINAL_NETWORKS."""
    return genotype_to_json(genotype)["space"]


def build_final_network(genotype, cfg, in_channels: int, num_classes: int) -> nn.Module:
    """The final network of `genotype`, sized by the `[train]` config section `cfg`."""
    return FINAL_NETWORKS.get(space_family(genotype))(genotype, cfg, in_channels, num_classes)


def count_params(model: nn.Module, auxiliary: bool = False) -> int:
    """Trainable parameters; the auxiliary head is left out unless `auxiliary` (as the DARTS
    code counts them)."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if p.requires_grad and (auxiliary or not name.startswith("auxiliary."))
    )


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one inference forward of one image (convolutions and linear
    layers, as torch's FLOP counter counts them, halved: papers' "FLOPs" are multiply-adds)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            p = next(model.parameters())
            model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
