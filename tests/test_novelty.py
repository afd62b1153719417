"""EN²AS novelty search: distances, k-nearest novelty, the NS-ES step, validity, exact resume."""

from __future__ import annotations

import pytest
import torch
from helpers import log_records, search_and_resumed_search

from diffnas.runs.config import ConfigError, SearchConfig, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.novelty import DISTANCES, NoveltySampler, novelty
from diffnas.search.single_path import DartsCodec, NB201Codec
from diffnas.spaces.darts_cnn import DartsSuperNet
from diffnas.spaces.nb201 import NB201SuperNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def darts_codec() -> DartsCodec:
    return DartsCodec(DartsSuperNet(C=2, layers=3, in_channels=3, num_classes=2))


@pytest.fixture(scope="module")
def nb201_codec() -> NB201Codec:
    return NB201Codec(NB201SuperNet(C=2, N=1, in_channels=3, num_classes=2))


def enc(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# Distance and novelty
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pairs", "positional"])
def test_novelty_is_0_for_a_duplicate_and_1_for_a_disjoint_encoding(darts_codec, name):
    """A member of the archive has novelty 0 (k=1, or k copies); an encoding sharing no (input,
    op) pair with any member has novelty 1."""
    dist = DISTANCES.get(name)(darts_codec)
    gen = torch.Generator().manual_seed(0)
    archive = torch.stack([darts_codec.sample(gen) for _ in range(6)])
    assert torch.all(novelty(archive, archive, 1, dist) == 0)
    copies = archive[2].repeat(3, 1)
    assert float(novelty(archive[2:3], torch.cat([copies, archive]), 3, dist)[0]) == 0.0
    # Members use ops 0..3 only; op 4 on every input makes every pair new.
    archive[:, 1::2] = archive[:, 1::2] % 4
    disjoint = darts_codec.sample(gen)
    disjoint[1::2] = 4
    assert float(novelty(disjoint[None], archive, 3, dist)[0]) == 1.0


def test_pair_distance_ignores_the_order_of_a_nodes_inputs(darts_codec):
    """Swapping a node's two (input, op) pairs is the same cell: distance 0 under `pairs`,
    2 of 8 pairs apart under `positional`; one changed op is 1 of 8 pairs."""
    a = enc(0, 1, 1, 2, 0, 3, 2, 4, 1, 5, 3, 6, 4, 7, 0, 1)
    swapped = a.clone()
    swapped[0:4] = enc(1, 2, 0, 1)
    one_op = a.clone()
    one_op[5] = 0
    pairs = DISTANCES.get("pairs")(darts_codec)
    positional = DISTANCES.get("positional")(darts_codec)
    assert pairs(a[None], torch.stack([swapped, one_op])).tolist() == [[0.0, 1 / 8]]
    assert positional(a[None], torch.stack([swapped, one_op])).tolist() == [[2 / 8, 1 / 8]]


def test_k_nearest_novelty_on_a_hand_made_archive(nb201_codec):
    """NB201 members 1, 2, 3 and 6 edges away from the candidate (and a duplicate): novelty is
    the mean of the k smallest distances, over all members when k exceeds them, without the
    excluded row."""
    dist = DISTANCES.get("pairs")(nb201_codec)
    cand = enc(0, 0, 0, 0, 0, 0)[None]
    archive = torch.stack(
        [
            enc(1, 1, 1, 0, 0, 0),  # 3/6
            enc(1, 0, 0, 0, 0, 0),  # 1/6
            enc(2, 3, 4, 1, 2, 3),  # 6/6
            enc(0, 0, 0, 0, 4, 4),  # 2/6
            enc(0, 0, 0, 0, 0, 0),  # 0
        ]
    )
    assert dist(cand, archive)[0].tolist() == pytest.approx([3 / 6, 1 / 6, 1.0, 2 / 6, 0.0])
    assert float(novelty(cand, archive, 1, dist)[0]) == 0.0
    assert float(novelty(cand, archive, 3, dist)[0]) == pytest.approx((0 + 1 / 6 + 2 / 6) / 3)
    assert float(novelty(cand, archive, 3, dist, exclude=4)[0]) == pytest.approx(
        (1 / 6 + 2 / 6 + 3 / 6) / 3
    )
    assert float(novelty(cand, archive, 10, dist)[0]) == pytest.approx((3 + 1 + 6 + 2) / 6 / 5)
    assert torch.isnan(novelty(cand, archive[:1], 2, dist, exclude=0)).all()


# ---------------------------------------------------------------------------------------------
# Valid architectures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_rounding_any_vector_gives_a_valid_architecture(space, darts_codec, nb201_codec):
    """arch(theta) is valid for wild continuous vectors: out of range, negative, equal inputs."""
    codec = darts_codec if space == "darts" else nb201_codec
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(500, codec.length, generator=gen, dtype=torch.float64) * 6
    theta[:50] = 1.0  # every input equal: a duplicate to repair at every node
    theta[50:100] = -3.0
    archs = codec.to_arch(theta)
    assert all(codec.is_valid(a) for a in archs)
    inside = codec.to_arch(codec.sample(gen).to(torch.float64) + 0.3)
    assert codec.is_valid(inside)


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_es_steps_always_yield_valid_architectures(space, darts_codec, nb201_codec):
    """Through warm-up and many NS-ES steps with a large step size (theta moves far), every
    sampled architecture is valid, and the archive holds the architectures of its vectors."""
    codec = darts_codec if space == "darts" else nb201_codec
    cfg = SearchConfig(novelty_archive=5, novelty_k=2, novelty_es_n=4, novelty_es_lr=20.0)
    sampler = NoveltySampler(codec, cfg, seed=0)
    seen = set()
    for step in range(40):
        encs, info = sampler.sample()
        assert all(codec.is_valid(e) for e in encs.values())
        seen.add(codec.key(encs))
        if step >= 5:
            assert 0.0 <= info["es_novelty"] <= 1.0 and 0.0 <= info["novelty"] <= 1.0
    for k in codec.kinds:
        assert torch.equal(sampler.members[k], codec.to_arch(sampler.theta[k]))
    assert len(seen) > 10  # with eta = 20 the ES does move


def test_warm_up_fills_the_archive_with_the_trained_architectures(nb201_codec):
    """The first `archive` steps train uniform samples, each stored at slot = step."""
    cfg = SearchConfig(novelty_archive=4, novelty_k=2)
    sampler = NoveltySampler(nb201_codec, cfg, seed=1)
    for step in range(4):
        encs, _ = sampler.sample()
        assert torch.equal(sampler.members["cell"][step], encs["cell"])
        assert sampler.filled == step + 1
    assert sampler.metrics() == {"archive_filled": 4, "warmup_done": True}


@pytest.mark.parametrize("reward_weight", [0.0, 0.5])
def test_es_step_follows_the_ns_es_update(nb201_codec, reward_weight):
    """theta' = theta + eta/(n sigma) sum_j F_j eps_j with F = (1-w) N + w R, written back to the
    archive entry it started from; the trained architecture is arch(theta')."""
    cfg = SearchConfig(
        novelty_archive=4, novelty_k=2, novelty_es_n=5, novelty_es_lr=0.7,
        novelty_es_sigma=0.8, novelty_reward_weight=reward_weight,
    )  # fmt: skip
    sampler = NoveltySampler(nb201_codec, cfg, seed=2)
    for _ in range(4):
        sampler.sample()
    theta0 = sampler.theta["cell"].clone()
    members0 = sampler.members["cell"].clone()

    def reward(encs):  # any deterministic score of the candidate will do
        return float(encs["cell"].sum()) / 24

    # Replay the sampler's draws: the archive slot, then the n directions.
    gen = torch.Generator()
    gen.set_state(sampler.gen.get_state())
    slot = int(torch.randint(4, (1,), generator=gen))
    eps = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    cands = nb201_codec.to_arch(theta0[slot] + 0.8 * eps)
    dist = DISTANCES.get("pairs")(nb201_codec)
    score = novelty(cands, members0, 2, dist)
    r = torch.tensor([reward({"cell": c}) for c in cands], dtype=torch.float64)
    score = (1 - reward_weight) * score + reward_weight * r
    want = theta0[slot] + 0.7 / (5 * 0.8) * (score @ eps)

    encs, info = sampler.sample(reward if reward_weight else None)
    assert torch.allclose(sampler.theta["cell"][slot], want, rtol=0, atol=1e-12)
    assert torch.equal(encs["cell"], nb201_codec.to_arch(want))
    others = [i for i in range(4) if i != slot]
    assert torch.equal(sampler.theta["cell"][others], theta0[others])
    assert ("reward" in info) == bool(reward_weight)


def test_bad_novelty_settings_are_clear_errors(nb201_codec):
    with pytest.raises(ValueError, match="novelty_warmup = 0"):
        NoveltySampler(nb201_codec, SearchConfig(novelty_warmup=0), seed=0)
    with pytest.raises(ValueError, match="novelty_es_sigma"):
        NoveltySampler(nb201_codec, SearchConfig(novelty_es_sigma=0.0), seed=0)
    with pytest.raises(ConfigError, match="novelty_distance"):
        load_config(None, ["search.novelty_distance=hamming"])
    with pytest.raises(ConfigError, match="novelty_reward_weight"):
        load_config(None, ["search.novelty_reward_weight=1.5"])


# ---------------------------------------------------------------------------------------------
# The search loop: logs and exact resume
# ---------------------------------------------------------------------------------------------

TINY = [
    "run.seed=4",
    "run.threads=1",
    "run.progress=false",
    "run.log_every=2",
    'data.dataset="synthetic"',
    "data.limit=96",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    'space.name="nb201"',
    "space.C=4",
    "space.N=1",
    "search.epochs=3",
    'search.strategy="novelty"',
    "search.novelty_archive=3",
    "search.novelty_k=2",
    "search.novelty_es_n=3",
    "search.novelty_es_lr=3.0",
]


def test_search_resume_equals_uninterrupted(tmp_path):
    """A novelty search stopped after an epoch (mid-search, the archive full and ES running)
    and resumed logs, samples and trains exactly as an uninterrupted one; epoch records carry
    the distinct-architecture counts and the mean novelty."""
    done, resumed = search_and_resumed_search(tmp_path, TINY, stop_after=2)
    assert resumed == done
    for name in ("metrics.jsonl", "genotypes.jsonl"):
        assert log_records(tmp_path / "b" / name) == log_records(tmp_path / "a" / name), name
    a = RunDir(tmp_path / "a").load_checkpoint()["strategy"]
    b = RunDir(tmp_path / "b").load_checkpoint()["strategy"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["sampler"]["theta"]["cell"], b["sampler"]["theta"]["cell"])
    epochs = [r for r in log_records(tmp_path / "a" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["distinct_archs_epoch"] for r in epochs][0] >= 1
    assert all(0 <= r["mean_novelty"] <= 1 for r in epochs)
    assert epochs[-1]["distinct_archs"] >= max(r["distinct_archs_epoch"] for r in epochs)
    assert epochs[-1]["warmup_done"] is True
