"""EN²AS on the DARTS RNN space: the RNN path codec, a single-path LM step (only the sampled
path runs and learns), exact resume of a novelty search, and sample_rank by perplexity."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from helpers import write_tiny_corpus

from diffnas.arch import ArchParameters
from diffnas.runs.config import SearchConfig, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search import STRATEGIES
from diffnas.search.loop import run_search
from diffnas.search.novelty import DISTANCES
from diffnas.search.objectives import ImageObjective, LMObjective
from diffnas.search.single_path import RNNCodec, path_codec
from diffnas.select import open_select_dir, run_select
from diffnas.spaces.darts_rnn import RNN_ACTIVATIONS, DartsRNNCell, DartsRNNSuperNet, edge_offset
from diffnas.spaces.genotypes import DARTS_RNN_OPS, validate_rnn
from diffnas.spaces.language_model import RNNLanguageModel

TINY = [
    "lm.emsize=4",
    "lm.nhid=4",
    "lm.bptt=5",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.limit=120",
    "run.threads=1",
    "run.progress=false",
    "run.tensorboard=false",
    "run.log_every=3",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """A tiny corpus in the PTB layout: random sentences over 12 words."""
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"), seed=1)


def test_rnn_codec_encodes_one_input_and_one_activation_per_node():
    """[op, in] per node: samples are valid final cells read back by the DARTS RNN rule, their
    weights are one-hot per node and never on `none`; rounding any vector is valid; the pair
    distance counts changed nodes."""
    model = DartsRNNSuperNet(7, 4, 4)  # ops with `none` at column 0
    codec = path_codec(model)
    assert isinstance(codec, RNNCodec) and codec.length == 16
    assert codec.hi.tolist()[1::2] == list(range(8)) and codec.hi.tolist()[0::2] == [3] * 8
    like = {"rnn": torch.zeros(model.arch_shapes()["rnn"])}
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        encs = codec.sample_all(gen)
        assert codec.is_valid(encs["rnn"])
        g = validate_rnn(codec.genotype(encs))
        w = codec.weights(encs, like)["rnn"]
        assert w.sum() == 8 and w[:, DARTS_RNN_OPS.index("none")].sum() == 0
        for node in range(1, 9):
            assert w[edge_offset(node) : edge_offset(node) + node].sum() == 1
        assert model.genotype({"rnn": w}) == g
        assert torch.equal(codec.encode(g)["rnn"], encs["rnn"])
    theta = torch.randn(50, 16, dtype=torch.float64) * 10
    assert all(codec.is_valid(a) for a in codec.to_arch(theta))
    a = codec.sample(gen)
    b = a.clone()
    b[2 * 5] = (b[2 * 5] + 1) % 4  # node 6's activation
    b[2 * 7 + 1] = (b[2 * 7 + 1] + 1) % 8  # node 8's input
    assert DISTANCES.get("pairs")(codec)(a[None], torch.stack([a, b])).tolist() == [[0.0, 0.25]]
    with pytest.raises(ValueError, match="does not sample"):
        codec.encode(g._replace(recurrent=[("none", 0)] + g.recurrent[1:]))


def test_a_single_path_lm_step_runs_and_trains_only_the_sampled_path(monkeypatch):
    """One random_path step on an LM supernet calls, per node and time step, only the sampled
    activation; its loss and gradients are those of the final cell of the sampled genotype
    (so no other edge or op contributes), and the step is SGD with the LM's lr scaling
    (seq_len / bptt). The hidden state carries over to the next segment."""
    torch.manual_seed(0)
    model = DartsRNNSuperNet(9, 6, 6, batch_norm=False)
    arch = ArchParameters(model.arch_shapes())
    cfg = SearchConfig(strategy="random_path", w_lr=0.5, w_lr_min=0.5, epochs=1, grad_clip=0.0,
                       w_momentum=0.0, w_weight_decay=0.0)  # fmt: skip
    objective = LMObjective(bptt=8)
    search = STRATEGIES.get("random_path")(model, arch, cfg, objective=objective)
    search.on_epoch_start(0)
    x = torch.randint(9, (4, 3))  # 4 steps of a bptt of 8: half the learning rate
    y = torch.randint(9, (4, 3))
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    calls = Counter()
    for name in ("tanh", "relu", "sigmoid", "identity"):
        fn = RNN_ACTIVATIONS.get(name)
        monkeypatch.setitem(
            RNN_ACTIVATIONS._items, name, lambda h, fn=fn, name=name: calls.update([name]) or fn(h)
        )
    m = search.step((x, y), None)
    genotype = search.genotype()
    assert calls == Counter(
        {op: 4 * n for op, n in Counter(o for o, _ in genotype.recurrent).items()}
    )
    monkeypatch.undo()

    child = RNNLanguageModel(9, 6, DartsRNNCell(6, 6, genotype))
    child.load_state_dict(before)
    logits, hidden = child(x)
    loss = F.cross_entropy(logits.reshape(-1, 9), y.reshape(-1))
    loss.backward()
    assert m["train_loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert m["train_ppl"] == pytest.approx(loss.exp().item(), rel=1e-5)
    torch.testing.assert_close(objective.hidden["train"], hidden.detach())
    grads = dict(child.named_parameters())
    for name, p in model.named_parameters():
        ref = grads[name].grad
        torch.testing.assert_close(p.grad, ref, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(p.detach(), before[name] - 0.5 * 0.5 * ref)
    assert all(not a.requires_grad or a.grad is None for a in arch.parameters())


def _search(corpus_dir, out, settings, stop_after=None, resume=False):
    cfg = load_config(
        "configs/darts_rnn_ptb.toml",
        [*TINY, f"lm.data_dir={corpus_dir}", f"run.out={out}", *settings],
    )
    run = RunDir.open_existing(out) if resume else RunDir(out).create(cfg)
    if resume:
        cfg = run.read_config()
    return run_search(cfg, run, resume=resume, log=lambda s: None, stop_after=stop_after)


def _records(path) -> list[dict]:
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "epoch_time_s")} for r in recs]


NOVELTY = [
    'search.strategy="novelty"',
    "search.epochs=3",
    "search.novelty_archive=8",
    "search.novelty_k=3",
    "search.novelty_es_n=2",
    "search.novelty_es_lr=3.0",
    "search.novelty_reward_weight=0.5",
    "search.novelty_reward_batches=2",
]


def test_rnn_novelty_search_resume_equals_uninterrupted(corpus_dir, tmp_path):
    """EN²AS-PR on the DARTS RNN space, stopped after two epochs (archive full, ES running) and
    resumed: logs, archive, weights and genotype equal an uninterrupted run's."""
    g_ref = _search(corpus_dir, tmp_path / "a", NOVELTY)
    _search(corpus_dir, tmp_path / "b", NOVELTY, stop_after=2)
    g = _search(corpus_dir, tmp_path / "b", NOVELTY, resume=True)
    assert g == g_ref and len(g.recurrent) == 8
    for name in ("metrics.jsonl", "genotypes.jsonl"):
        assert _records(tmp_path / "b" / name) == _records(tmp_path / "a" / name), name
    a = RunDir(tmp_path / "a").load_checkpoint()["strategy"]
    b = RunDir(tmp_path / "b").load_checkpoint()["strategy"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["sampler"]["theta"]["rnn"], b["sampler"]["theta"]["rnn"])
    epochs = [r for r in _records(tmp_path / "a" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert len(epochs) == 3 and epochs[-1]["warmup_done"] is True
    assert all(r["valid_ppl"] > 1 and r["train_ppl"] > 1 for r in epochs)
    assert all(0 < r["mean_reward"] <= 1 for r in epochs[1:])
    assert epochs[-1]["distinct_archs"] >= 2


def test_sample_rank_on_an_lm_supernet_ranks_by_lower_perplexity(corpus_dir, tmp_path):
    """sample_rank on a single-path RNN supernet: quick perplexities, the k lowest rescored on
    the whole valid split, the lowest of those selected; the direction comes from the
    objective."""
    assert LMObjective().rank_key(3.0) < LMObjective().rank_key(4.0)
    assert ImageObjective().rank_key(90.0) < ImageObjective().rank_key(80.0)
    _search(corpus_dir, tmp_path / "s", ['search.strategy="random_path"', "search.epochs=1"])
    sel = ["select.sample_n=6", "select.sample_top_k=2", "select.sample_batches=2"]
    cfg, run = open_select_dir(tmp_path / "s", "sample_rank", sel, out=tmp_path / "sel")
    g = run_select(cfg, tmp_path / "s", run, log=lambda s: None)
    recs = [json.loads(x) for x in (run.path / "candidates.jsonl").read_text().splitlines()]
    quick = [r for r in recs if r["stage"] == "quick"]
    full = [r for r in recs if r["stage"] == "full"]
    assert len(quick) == 6 and len({r["ppl"] for r in quick}) > 1
    top = sorted(quick, key=lambda r: (r["ppl"], r["index"]))[:2]
    assert [r["index"] for r in full] == [r["index"] for r in top]
    best = min(full, key=lambda r: r["ppl"])
    result = json.loads((run.path / "result.json").read_text())
    assert result["genotype"] == str(g) == best["genotype"]
    assert result["valid_ppl"] == best["ppl"] and "valid_acc" not in result
