"""Word-level language model around any recurrent core: embedding -> core -> tied decoder.

The regularisation is that of the DARTS / AWD-LSTM code: embedding dropout (whole words of the
embedding matrix, `dropoute`), locked (variational) dropout on the embedded input (`dropouti`)
and on the core's output (`dropout`), one mask per sequence shared over time. The decoder's
weight is the embedding matrix (weight tying), so the core's hidden size must equal the
embedding size. The searched DARTS RNN supernet and `diffnas train --task lm` are both this
model; only the core differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Uniform init range of the embedding and of the DARTS cell's matrices (quark0/darts rnn/model.py).
INIT_RANGE = 0.04


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout of x [T, B, D] with one mask per sequence (column b), the same at every step."""
    if not training or p == 0:
        return x
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * mask


def dropout_mask(batch: int, size: int, p: float, like: torch.Tensor) -> torch.Tensor:
    """A [batch, size] inverted-dropout mask (keep probability 1 - p, scaled by 1 / (1 - p))."""
    return like.new_empty(batch, size).bernoulli_(1 - p) / (1 - p)


def embedding_dropout(
    weight: torch.Tensor, tokens: torch.Tensor, p: float, training: bool
) -> torch.Tensor:
    """Embed `tokens` with whole rows (words) of `weight` dropped with probability p, the rest
    scaled by 1 / (1 - p): a dropped word is dropped everywhere in the batch."""
    if training and p > 0:
        mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
        weight = weight * mask
    return F.embedding(tokens, weight)


class RNNLanguageModel(nn.Module):
    """embedding -> `core` -> locked dropout -> decoder tied to the embedding.

    `forward(tokens [T, B], hidden)` returns (logits [T, B, ntoken], hidden); with `return_h`
    also the core's raw output (for temporal activation regularisation) and the dropped output
    (for activation regularisation). Extra keyword arguments go to the core (the search cell
    takes its edge weights so).
    """

    def __init__(
        self,
        ntoken: int,
        emsize: int,
        core: nn.Module,
        dropout: float = 0.0,
        dropouti: float = 0.0,
        dropoute: float = 0.0,
    ):
        super().__init__()
        hidden = getattr(core, "hidden_size", emsize)
        if hidden != emsize:
            raise ValueError(
                f"the decoder is tied to the embedding, so the core's hidden size ({hidden}) "
                f"must equal the embedding size ({emsize}); set lm.nhid = lm.emsize"
            )
        self.ntoken, self.emsize = ntoken, emsize
        self.dropout, self.dropouti, self.dropoute = dropout, dropouti, dropoute
        self.encoder = nn.Embedding(ntoken, emsize)
        self.core = core
        self.decoder = nn.Linear(emsize, ntoken)
        self.decoder.weight = self.encoder.weight
        with torch.no_grad():
            self.encoder.weight.uniform_(-INIT_RANGE, INIT_RANGE)
            self.decoder.bias.zero_()

    def init_hidden(self, batch_size: int):
        """The core's zero state for `batch_size` sequences."""
        return self.core.init_hidden(batch_size)

    def forward(self, tokens: torch.Tensor, hidden=None, return_h: bool = False, **core_kwargs):
        """(logits, hidden), or (logits, hidden, raw core output, dropped output) with return_h."""
        emb = embedding_dropout(self.encoder.weight, tokens, self.dropoute, self.training)
        emb = locked_dropout(emb, self.dropouti, self.training)
        raw, hidden = self.core(emb, hidden, **core_kwargs)
        out = locked_dropout(raw, self.dropout, self.training)
        logits = self.decoder(out)
        if return_h:
            return logits, hidden, raw, out
        return logits, hidden
