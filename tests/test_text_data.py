"""Text corpora and BPTT batching: vocab, layouts, clear errors, segment lengths, batchify."""

from __future__ import annotations

import pytest
import torch

from diffnas.data.images import DataNotFoundError
from diffnas.data.text import (
    EOS,
    BPTTBatches,
    CorpusError,
    batchify,
    load_corpus,
    segment_lengths,
)

TRAIN = " the cat sat on the mat \n the dog sat \n\n a <unk> ran \n"
VALID = " the cat ran \n"
TEST = " a dog sat on the cat \n"


def write_corpus(
    root, train=TRAIN, valid=VALID, test=TEST, names=("train.txt", "valid.txt", "test.txt")
):
    """Write the three split files of a corpus directory."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in zip(names, (train, valid, test), strict=True):
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_corpus_ids_vocab_and_eos(tmp_path):
    """Each line is its words plus <eos> (blank lines too, as the original); the vocabulary is
    the training split's words in order of first appearance; ids decode back to the text."""
    c = load_corpus(write_corpus(tmp_path / "c"))
    words = [w for line in TRAIN.split("\n")[:-1] for w in [*line.split(), EOS]]
    assert [c.vocab[i] for i in c.train.tolist()] == words
    assert c.vocab[:3] == ["the", "cat", "sat"]
    assert c.ntokens == len(set(words))
    assert [c.vocab[i] for i in c.valid.tolist()] == ["the", "cat", "ran", EOS]
    assert c.test.dtype == torch.long and len(c.test) == 7


def test_wikitext_layout(tmp_path):
    """wiki.{train,valid,test}.tokens is read like train/valid/test.txt."""
    names = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")
    a = load_corpus(write_corpus(tmp_path / "w", names=names))
    b = load_corpus(write_corpus(tmp_path / "p"))
    assert a.vocab == b.vocab and torch.equal(a.test, b.test)


def test_unknown_word_names_file_and_line(tmp_path):
    """A valid/test word outside the training vocabulary: error with the file and the line."""
    root = write_corpus(tmp_path / "c", test=" the cat sat \n a zebra sat \n")
    with pytest.raises(CorpusError, match=r"test\.txt, line 2: the word 'zebra'"):
        load_corpus(root)


@pytest.mark.parametrize("text", ["", "\n   \n\n"])
def test_empty_split_is_an_error(tmp_path, text):
    """A split without words stops with its file named."""
    root = write_corpus(tmp_path / "c", valid=text)
    with pytest.raises(CorpusError, match=r"valid\.txt: the valid split has no words"):
        load_corpus(root)


def test_missing_files_and_bad_utf8(tmp_path):
    """Missing files name the expected layouts; undecodable bytes name the line."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="train.txt, valid.txt, test.txt"):
        load_corpus(tmp_path / "empty")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "nowhere")
    root = write_corpus(tmp_path / "c")
    (root / "valid.txt").write_bytes(b" the cat \n the \xff cat \n")
    with pytest.raises(CorpusError, match=r"valid\.txt, line 2: not valid UTF-8"):
        load_corpus(root)


def test_batchify_columns_are_contiguous_text():
    """Column b of batchify is the b-th contiguous piece of the stream; the rest is dropped."""
    ids = torch.arange(23)
    data = batchify(ids, 4)
    assert data.shape == (5, 4)
    assert torch.equal(data[:, 1], torch.arange(5, 10))
    with pytest.raises(CorpusError, match="fewer than 2 per column"):
        batchify(torch.arange(7), 4)


def test_eval_segments_cover_the_data_once():
    """Fixed-length segments: y is x shifted by one row, every row but the last predicted."""
    data = batchify(torch.arange(60), 3)  # [20, 3]
    b = BPTTBatches(data, 6)
    segs = list(b.epoch())
    assert [len(x) for x, _ in segs] == [6, 6, 6, 1]
    xs = torch.cat([x for x, _ in segs])
    ys = torch.cat([y for _, y in segs])
    assert torch.equal(xs, data[:-1]) and torch.equal(ys, data[1:])
    assert sum(y.numel() for _, y in segs) == b.tokens


def test_random_lengths_follow_the_original_rule_and_replay():
    """Training segments: bptt or bptt/2 (search), or N(base, std) clipped to [5, bptt + delta]
    (final training); consecutive, cut at the end; the same seed replays the same lengths."""
    gen = torch.Generator().manual_seed(0)
    search = segment_lengths(5000, 10, gen, 0.0)
    lengths = [n for _, n in search[:-1]]
    assert set(lengths) <= {5, 10} and 5 in lengths and lengths.count(10) > 0.9 * len(lengths)
    starts = [i for i, _ in search]
    assert starts == [0] + list(torch.tensor([n for _, n in search[:-1]]).cumsum(0).tolist())
    final = segment_lengths(5000, 10, torch.Generator().manual_seed(0), 5.0, 3)
    assert all(5 <= n <= 13 for _, n in final[:-1]) and len({n for _, n in final}) > 4
    b = BPTTBatches(batchify(torch.arange(2000), 2), 10, random_lengths=True, seq_len_std=5.0)
    assert b.segments(7) == b.segments(7) and b.segments(7) != b.segments(8)
    i, n = b.segments(7)[-1]
    assert i + n == 999  # the last segment ends at the last row that has a next word
