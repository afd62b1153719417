"""Mixed precision (`run.autocast = "bf16"`): the forward passes of image search and final
training run in bfloat16 while weights, alphas and gradients stay float32; bad combinations are
config errors. (On CPU: the same code paths a GPU takes, without the speed.)"""

from __future__ import annotations

import pytest
import torch

from diffnas.runs.config import ConfigError, load_config
from diffnas.search.loop import build_search, epoch_seed
from diffnas.spaces.final import build_final_network
from diffnas.spaces.genotypes import load_genotype
from diffnas.train.image import ImageTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    'data.dataset="synthetic"',
    "data.limit=32",
    "data.batch_size=8",
    "space.C=4",
    "run.seed=1",
    "search.alpha_lr=0.01",
    "run.channels_last=false",  # bf16 on CPU needs NCHW (see test_bf16_config_errors)
]


def _search(space: list[str], autocast: str):
    cfg = load_config(None, [*TINY, *space, f'run.autocast="{autocast}"'])
    s = build_search(cfg)
    s.strategy.on_epoch_start(0)
    train = list(s.batches(s.train.epoch(epoch_seed(1, 0, 0))))
    val = list(s.batches(s.val.epoch(epoch_seed(1, 0, 1))))
    return s, train, val


def _alpha_grads(s, batch) -> torch.Tensor:
    st = s.strategy
    loss, logits = st.objective.loss(st.model, st.arch.weights(), batch)
    grads = torch.autograd.grad(loss, list(st.arch.parameters()))
    return torch.cat([g.flatten() for g in grads]), logits


@pytest.mark.parametrize(
    "space", [['space.name="nb201"', "space.N=1"], ['space.name="darts"', "space.layers=3"]]
)
def test_bf16_search_computes_in_bf16_and_keeps_float32_state(space):
    s, train, val = _search(space, "bf16")
    ref, _, _ = _search(space, "off")
    # Same supernet and alphas (same seed): the alpha gradient differs by bf16 rounding only.
    g, logits = _alpha_grads(s, val[0])
    g_ref, ref_logits = _alpha_grads(ref, val[0])
    assert logits.dtype == torch.bfloat16 and ref_logits.dtype == torch.float32
    assert not torch.equal(g, g_ref)
    assert torch.nn.functional.cosine_similarity(g, g_ref, dim=0) > 0.9
    st = s.strategy
    metrics = [st.step(b, v) for b, v in zip(train[:2], val[:2], strict=True)]
    assert all(torch.isfinite(torch.tensor(m["train_loss"])) for m in metrics)
    assert {p.dtype for p in st.arch.parameters()} == {torch.float32}
    assert {p.dtype for p in st.model.parameters()} == {torch.float32}
    grads = [p.grad for p in st.model.parameters() if p.grad is not None]
    assert grads and {g.dtype for g in grads} == {torch.float32}


def test_bf16_final_training_step():
    cfg = load_config(
        None,
        ["train.genotype=DARTS_V2", "train.C=4", "train.layers=3", 'run.autocast="bf16"'],
    )
    torch.manual_seed(0)
    model = build_final_network(load_genotype("DARTS_V2"), cfg.train, 3, 10)
    trainer = ImageTrainer(model, cfg.train, cfg.run.autocast)
    trainer.start_epoch(1)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    loss, acc = trainer.step(x, y)
    assert torch.isfinite(torch.tensor(loss)) and 0 <= acc <= 100
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.float32}
    scores = trainer.evaluate([(x, y)])
    assert 0 <= scores["test_acc"] <= 100


def test_bf16_config_errors():
    cfg = load_config(None, [*TINY, 'run.autocast="bf16"', 'run.dtype="float64"'])
    with pytest.raises(ConfigError, match="run.autocast = 'bf16' needs run.dtype = 'float32'"):
        build_search(cfg)
    cfg = load_config(None, [*TINY, 'run.autocast="bf16"', "run.channels_last=true"])
    with pytest.raises(ConfigError, match="on CPU needs run.channels_last = false"):
        build_search(cfg)
