"""EN²AS: novelty-driven single-path sampling (docs/METHODS.md, section 4).

The behaviour of an architecture is its encoding (`diffnas.search.single_path`). The novelty of
an encoding is the mean of its k smallest distances to the members of an archive. Per cell type
the sampler keeps a fixed-size archive of continuous vectors, filled during the warm-up with
uniformly random architectures (one per training step, at slot step mod size). After the
warm-up each step runs one NS-ES step per cell type:

1. pick a random archive entry i, theta = A[i];
2. draw n directions eps_1..eps_n ~ N(0, I);
3. score N_j = novelty(arch(theta + sigma eps_j)) against the archive;
4. theta' = theta + eta / (n sigma) * sum_j F_j eps_j, with F_j = N_j, or with the performance
   reward (NSR-ES, EN²AS-PR) F_j = (1 - w) N_j + w R_j, R_j the accuracy (a fraction, higher is
   better) of the candidate under inherited weights on a few validation batches;
5. A[i] = theta'; the architecture trained is arch(theta').

arch() rounds, clips to the space's bounds and keeps a node's two inputs distinct
(`PathCodec.to_arch`). Distances between encodings are chosen by name from `DISTANCES`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from diffnas.registry import Registry
from diffnas.runs.config import ConfigError
from diffnas.search.single_path import SAMPLERS, Encoding, PathCodec, RewardFn, SinglePathSearch

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # [n, L], [m, L] -> [n, m]

DISTANCES: Registry = Registry("novelty distance")


def _gene_equal(codec: PathCodec, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """eq[i, j, g, h]: gene g of a[i] equals gene h of b[j] (all its positions)."""
    ga, gb = a[:, codec.genes], b[:, codec.genes]  # [n, G, Lg], [m, G, Lg]
    return (ga[:, None, :, None, :] == gb[None, :, None, :, :]).all(-1)


@DISTANCES.register("pairs")
def pair_distance(codec: PathCodec) -> Distance:
    """The fraction of genes ((input, op) pairs; NB201: edge ops) of one architecture that the
    other lacks, matching genes inside a group (a node's two inputs) in the best order."""
    n_genes = len(codec.genes)

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        eq = _gene_equal(codec, a, b)
        matched = torch.zeros(eq.shape[:2], dtype=torch.int64)
        for group in codec.groups:
            best = None
            for perm in itertools.permutations(group):
                m = sum(eq[:, :, g, h].to(torch.int64) for g, h in zip(group, perm, strict=True))
                best = m if best is None else torch.maximum(best, m)
            matched += best
        return 1.0 - matched.to(torch.float64) / n_genes

    return distance


@DISTANCES.register("positional")
def positional_distance(codec: PathCodec) -> Distance:
    """The fraction of genes that differ position by position (a node's inputs compared in
    their encoded order: an architecture and its swapped twin are apart)."""
    n_genes = len(codec.genes)

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        eq = _gene_equal(codec, a, b)
        diag = eq.diagonal(dim1=2, dim2=3)  # [n, m, G]
        return 1.0 - diag.to(torch.float64).sum(-1) / n_genes

    return distance


def novelty(
    candidates: torch.Tensor,
    archive: torch.Tensor,
    k: int,
    distance: Distance,
    exclude: int | None = None,
) -> torch.Tensor:
    """Mean of the k smallest distances of each candidate [n, L] to the archive [m, L] (all of
    it when it has fewer than k members), leaving out archive row `exclude`; NaN for an empty
    archive."""
    d = distance(candidates, archive)
    if exclude is not None:
        d = torch.cat([d[:, :exclude], d[:, exclude + 1 :]], dim=1)
    if d.shape[1] == 0:
        return torch.full((len(candidates),), float("nan"), dtype=torch.float64)
    return torch.topk(d, min(k, d.shape[1]), dim=1, largest=False).values.mean(dim=1)


def _means(**values: list[float]) -> dict[str, float]:
    """The mean of each list's finite values; lists without any are left out."""
    out = {}
    for name, vs in values.items():
        vs = [v for v in vs if v == v]  # NaN: novelty against an empty archive
        if vs:
            out[name] = sum(vs) / len(vs)
    return out


@SAMPLERS.register("novelty")
class NoveltySampler:
    """The archive and the NS-ES steps of EN²AS, one archive per cell type."""

    def __init__(self, codec: PathCodec, cfg, seed: int):
        if cfg.novelty_warmup == 0:
            raise ConfigError(
                "search.novelty_warmup = 0: the archive must hold at least one architecture "
                "before the first ES step; use -1 (the archive size) or a positive number"
            )
        if cfg.novelty_es_sigma <= 0:
            raise ValueError(f"search.novelty_es_sigma = {cfg.novelty_es_sigma}: must be > 0")
        self.codec, self.cfg = codec, cfg
        self.size = cfg.novelty_archive
        self.warmup = self.size if cfg.novelty_warmup < 0 else cfg.novelty_warmup
        self.distance = DISTANCES.get(cfg.novelty_distance)(codec)
        self.needs_reward = cfg.novelty_reward_weight > 0
        self.gen = torch.Generator().manual_seed(seed)
        L = codec.length
        # theta: the continuous ES vectors; members: their architectures (what distances see).
        self.theta = {k: torch.zeros(self.size, L, dtype=torch.float64) for k in codec.kinds}
        self.members = {k: torch.zeros(self.size, L, dtype=torch.int64) for k in codec.kinds}
        self.filled = 0
        self.steps = 0

    def _novelty(self, kind: str, cands: torch.Tensor, exclude: int | None = None) -> torch.Tensor:
        return novelty(
            cands, self.members[kind][: self.filled], self.cfg.novelty_k, self.distance, exclude
        )

    def sample(self, reward: RewardFn | None = None) -> tuple[Encoding, dict[str, float]]:
        """The next architecture to train, and its statistics: `novelty` (of the trained
        architecture against the rest of the archive, mean over cell types), and after the
        warm-up `es_novelty` (mean N_j of the ES candidates) and, with a reward, `reward`."""
        if self.steps < self.warmup:
            out, info = self._warmup_step()
        else:
            out, info = self._es_step(reward)
        self.steps += 1
        return out, info

    def _warmup_step(self) -> tuple[Encoding, dict[str, float]]:
        slot = self.steps % self.size
        out, nov = {}, []
        for kind in self.codec.kinds:
            enc = self.codec.sample(self.gen)
            if self.filled:
                # Against the archive as it stands, without the slot about to be overwritten.
                ex = slot if slot < self.filled else None
                nov.append(float(self._novelty(kind, enc[None], ex)[0]))
            self.theta[kind][slot] = enc.to(torch.float64)
            self.members[kind][slot] = enc
            out[kind] = enc
        self.filled = min(self.filled + 1, self.size)
        return out, _means(novelty=nov)

    def _es_step(self, reward: RewardFn | None) -> tuple[Encoding, dict[str, float]]:
        cfg, kinds = self.cfg, self.codec.kinds
        n, sigma = cfg.novelty_es_n, cfg.novelty_es_sigma
        slots = {k: int(torch.randint(self.filled, (1,), generator=self.gen)) for k in kinds}
        # The other cell types stay at their centres while one type's candidates are scored.
        centres = {k: self.members[k][slots[k]].clone() for k in kinds}
        out, nov, es_nov, rewards = {}, [], [], []
        for kind in kinds:
            theta = self.theta[kind][slots[kind]]
            eps = torch.randn(n, self.codec.length, generator=self.gen, dtype=torch.float64)
            cands = self.codec.to_arch(theta + sigma * eps)
            score = self._novelty(kind, cands)
            es_nov.append(float(score.mean()))
            if reward is not None:
                r = torch.tensor([reward({**centres, kind: c}) for c in cands], dtype=torch.float64)
                rewards.append(float(r.mean()))
                w = cfg.novelty_reward_weight
                score = (1 - w) * score + w * r
            theta = theta + cfg.novelty_es_lr / (n * sigma) * (score @ eps)
            enc = self.codec.to_arch(theta)
            nov.append(float(self._novelty(kind, enc[None], exclude=slots[kind])[0]))
            self.theta[kind][slots[kind]] = theta
            self.members[kind][slots[kind]] = enc
            out[kind] = enc
        return out, _means(novelty=nov, es_novelty=es_nov, reward=rewards)

    def metrics(self) -> dict:
        """How full the archive is and whether the warm-up is over."""
        return {"archive_filled": self.filled, "warmup_done": self.steps >= self.warmup}

    def state_dict(self) -> dict:
        """The archive (vectors and architectures), the step count and the generator."""
        return {
            "theta": {k: v.clone() for k, v in self.theta.items()},
            "members": {k: v.clone() for k, v in self.members.items()},
            "filled": self.filled,
            "steps": self.steps,
            "gen": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict."""
        for k in self.codec.kinds:
            if state["theta"][k].shape != self.theta[k].shape:
                raise ValueError(
                    f"archive of shape {tuple(state['theta'][k].shape)} in the checkpoint, "
                    f"{tuple(self.theta[k].shape)} in this config (search.novelty_archive)"
                )
            self.theta[k] = state["theta"][k].to(torch.float64).clone()
            self.members[k] = state["members"][k].to(torch.int64).clone()
        self.filled, self.steps = int(state["filled"]), int(state["steps"])
        self.gen.set_state(state["gen"])


class NoveltySearch(SinglePathSearch):
    """EN²AS: single-path supernet training with novelty-search sampling; with
    `search.novelty_reward_weight > 0`, EN²AS-PR (novelty mixed with the inherited-weight
    reward)."""

    sampler_name = "novelty"
