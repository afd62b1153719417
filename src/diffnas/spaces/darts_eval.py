"""The DARTS evaluation network: the final network of a DARTS-space genotype, trained from scratch.

As in the DARTS paper's code: a stem (see STEMS), L cells with reductions at L/3 and 2L/3
(channels doubled there), each cell's inputs preprocessed by ReLU-conv1x1-BN (or
FactorizedReduce after a reduction cell), node = sum of its chosen ops, output = concat of the
`concat` nodes; global average pooling and a linear classifier. Every BN is affine. Training adds
drop-path on every op that is not the identity, and an auxiliary classifier after the cell at
2L/3 (only in training; it is not counted in the parameter count the papers report).

Stems (`train.stem`): `cifar` (NetworkCIFAR: one 3x3 conv to 3C channels at full resolution,
both first cell inputs the same) and `imagenet` (NetworkImageNet, the mobile setting: a 3x3
stride-2 conv to C/2, BN, ReLU, a 3x3 stride-2 conv to C, BN, then ReLU, a 3x3 stride-2 conv,
BN; the first cell reads both, the first one reduced, so the cells start at 1/8 of the input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.ops import make_op
from diffnas.ops.cnn import Identity
from diffnas.registry import Registry
from diffnas.spaces.darts_cnn import cell_preprocess
from diffnas.spaces.genotypes import Genotype, validate_darts


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability `drop_prob`, scaling the kept ones by 1/(1-p)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class EvalCell(nn.Module):
    """A discrete DARTS cell: node i sums the ops at positions 2i and 2i+1 of the genotype."""

    def __init__(self, gene, concat, C_pp, C_p, C, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = cell_preprocess(C_pp, C_p, C, reduction_prev, True)
        self.inputs = [j for _, j in gene]
        self.op_names = [op for op, _ in gene]
        self.ops = nn.ModuleList(
            make_op(op, C, C, 2 if reduction and j < 2 else 1, affine=True) for op, j in gene
        )
        self.concat = list(concat)

    def forward(self, s0, s1, drop_prob: float = 0.0):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            total = 0
            for k in (2 * node, 2 * node + 1):
                h = self.ops[k](states[self.inputs[k]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[k], Identity):
                    h = drop_path(h, drop_prob)
                total = total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """The DARTS auxiliary classifier on the 2L/3 cell's output (8x8 on CIFAR, 7x7 on ImageNet).

    On an 8x8 input the pooling is DARTS' AvgPool(5, stride 3) -> 2x2, on 7x7 its ImageNet
    head's AvgPool(5, stride 2) -> 2x2; other sizes s use kernel min(5, s-1) and stride
    s-kernel, which also gives 2x2, so any image size works. The ImageNet head of the DARTS code
    has no BN after its 768-channel conv (`final_bn = False`).
    """

    def __init__(self, C: int, num_classes: int, final_bn: bool = True):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768) if final_bn else nn.Identity(),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        size = x.shape[-1]
        if size < 2 or x.shape[-2] != size:
            raise ValueError(
                f"the auxiliary head needs a square feature map of side >= 2, got "
                f"{tuple(x.shape[-2:])}; use larger images or train.auxiliary_weight = 0"
            )
        kernel = min(5, size - 1)
        x = F.avg_pool2d(F.relu(x), kernel, stride=size - kernel)
        return self.classifier(self.features(x).flatten(1))


class CifarStem(nn.Sequential):
    """3x3 conv to `stem_multiplier * C` channels and BN; both cell inputs are its output.
    (A Sequential, so its parameters keep the names `stem.0.weight`, ... of earlier runs.)"""

    reduces = False  # the first cell's two inputs have the same size

    def __init__(self, in_channels: int, C: int, stem_multiplier: int):
        super().__init__(
            nn.Conv2d(in_channels, stem_multiplier * C, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_multiplier * C),
        )
        self.out_channels = (stem_multiplier * C,) * 2

    def forward(self, x):
        s = super().forward(x)
        return s, s


class ImageNetStem(nn.Module):
    """The mobile-setting stems: stem0 (two stride-2 convs, to C channels at 1/4) and stem1
    (ReLU, a stride-2 conv, BN: 1/8); the first cell reads both, reducing stem0's output."""

    reduces = True

    def __init__(self, in_channels: int, C: int, stem_multiplier: int):
        super().__init__()
        del stem_multiplier  # the ImageNet stems have C channels
        self.out_channels = (C, C)
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )

    def forward(self, x):
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


STEMS: Registry = Registry("network stem")
STEMS.add("cifar", CifarStem)
STEMS.add("imagenet", ImageNetStem)


class DartsNetwork(nn.Module):
    """The final DARTS network (NetworkCIFAR). forward(x) -> logits; in training with
    `with_aux=True` -> (logits, auxiliary logits or None)."""

    def __init__(
        self,
        genotype: Genotype,
        C: int = 36,
        layers: int = 20,
        in_channels: int = 3,
        num_classes: int = 10,
        auxiliary: bool = True,
        stem_multiplier: int = 3,
        stem: str = "cifar",
    ):
        super().__init__()
        genotype = validate_darts(genotype)
        self.genotype = genotype
        self.drop_path_prob = 0.0
        self.stem = STEMS.get(stem)(in_channels, C, stem_multiplier)
        (C_pp, C_p), C_cur = self.stem.out_channels, C
        cells, reduction_prev = [], self.stem.reduces
        self.aux_after = 2 * layers // 3
        C_aux = None
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_cur *= 2
            gene, concat = (
                (genotype.reduce, genotype.reduce_concat)
                if reduction
                else (genotype.normal, genotype.normal_concat)
            )
            cells.append(EvalCell(gene, concat, C_pp, C_p, C_cur, reduction, reduction_prev))
            reduction_prev = reduction
            C_pp, C_p = C_p, len(concat) * C_cur
            if i == self.aux_after:
                C_aux = C_p
        self.cells = nn.ModuleList(cells)
        self.auxiliary = (
            AuxiliaryHead(C_aux, num_classes, final_bn=not self.stem.reduces) if auxiliary else None
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def forward(self, x, with_aux: bool = False):
        s0, s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_after and self.auxiliary is not None and self.training and with_aux:
                aux = self.auxiliary(s1)
        logits = self.classifier(self.pool(s1).flatten(1))
        return (logits, aux) if with_aux else logits
