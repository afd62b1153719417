"""Recurrent cores: the one interface every recurrent model of diffnas is built on.

A core maps a sequence to a sequence of hidden states:

    out, hidden = core(x, hidden)      # x [T, B, input_size] -> out [T, B, hidden_size]
    hidden = core.init_hidden(B)       # zeros, on the core's device and dtype

`hidden` is any nest of tensors (a tensor, or a tuple for the LSTM); `detach_hidden` cuts it
from the graph between BPTT segments. The language model and the forecaster take any core, so
a searched cell, an LSTM and a GRU run on the same harness. Cores are chosen by name from
`RECURRENT_CORES`: each entry is `factory(input_size, hidden_size, **options) -> core`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from diffnas.registry import Registry

Hidden = Any  # a tensor or a tuple of tensors

RECURRENT_CORES: Registry = Registry("recurrent core")


def detach_hidden(hidden: Hidden) -> Hidden:
    """The hidden state cut from the autograd graph (truncated BPTT between segments)."""
    if isinstance(hidden, torch.Tensor):
        return hidden.detach()
    return tuple(detach_hidden(h) for h in hidden)


class _TorchRNNCore(nn.Module):
    """A one-layer torch LSTM or GRU behind the core interface."""

    rnn_type: type[nn.RNNBase]

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.rnn = self.rnn_type(input_size, hidden_size, num_layers, dropout=dropout)

    def init_hidden(self, batch_size: int) -> Hidden:
        """Zero state for `batch_size` sequences."""
        p = next(self.parameters())
        h = p.new_zeros(self.num_layers, batch_size, self.hidden_size)
        return (h, h.clone()) if self.rnn_type is nn.LSTM else h

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None):
        """(outputs [T, B, hidden_size], last hidden state)."""
        if hidden is None:
            hidden = self.init_hidden(x.shape[1])
        return self.rnn(x, hidden)


@RECURRENT_CORES.register("lstm")
class LSTMCore(_TorchRNNCore):
    """torch's LSTM (cuDNN on GPU): the classic baseline."""

    rnn_type = nn.LSTM


@RECURRENT_CORES.register("gru")
class GRUCore(_TorchRNNCore):
    """torch's GRU."""

    rnn_type = nn.GRU


def takes_genotype(name: str) -> bool:
    """Whether the core `name` is built from a genotype (a searched cell)."""
    return "genotype" in inspect.signature(RECURRENT_CORES.get(name)).parameters


def genotype_core(genotype) -> str | None:
    """The core a searched cell's genotype is built by (its space: darts_rnn, pair_rnn), None
    for any other genotype."""
    from diffnas.spaces.genotypes import genotype_to_json

    try:
        family = genotype_to_json(genotype)["space"]
    except TypeError:
        return None
    return family if family in RECURRENT_CORES else None


def core_hint(key: str, name: str, genotype) -> str:
    """For an error about core `name` (config key `key`) and `genotype`: which core to set."""
    own = genotype_core(genotype)
    return f"; this genotype is a {own} cell: set {key} = {own!r}" if own and own != name else ""


def build_core(name: str, input_size: int, hidden_size: int, **options) -> nn.Module:
    """The core registered as `name` (e.g. lstm, gru; searched cells register their own)."""
    return RECURRENT_CORES.get(name)(input_size, hidden_size, **options)
