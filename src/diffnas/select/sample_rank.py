"""Sample-and-rank selection (EN²AS, docs/METHODS.md 4): score architectures by inherited weights.

1. Sample `select.sample_n` distinct architectures uniformly (the space's single-path codec,
   `diffnas.search.single_path`) and score each with the supernet's inherited weights on
   `select.sample_batches` validation batches of `select.sample_batch_size` (the same batches
   for every candidate);
2. rescore the `select.sample_top_k` best on the whole validation split; keep the best.

A language-model supernet (the DARTS RNN space) is scored by its objective instead: validation
perplexity (lower is better) over the first `select.sample_batches` consecutive segments, then
over the whole valid split, in eval mode (running BN statistics; `select.bn` does not apply).
Which way a score ranks comes from the objective (`Objective.rank_key`); records and
`result.json` name the headline (`acc` or `ppl`).

Writes to the selection directory `candidates.jsonl` (one record per score: the candidate's
index, genotype, stage `quick` or `full`, accuracy and loss), `genotype.json` and `result.json`.
Seeded (`select.seed`, -1: `run.seed`) and deterministic: no score changes the supernet. A
checkpoint after every chunk of candidates makes it resumable; `stop_after` ends it after that
many chunks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from diffnas.data import EpochBatches
from diffnas.search.objectives import ImageObjective, Objective
from diffnas.search.single_path import PathCodec, path_codec
from diffnas.select.perturbation import score
from diffnas.spaces.genotypes import genotype_to_json

CANDIDATES_FILE = "candidates.jsonl"
RESULT_FILE = "result.json"
CHUNK = 50  # candidates scored between two checkpoints
MAX_DRAWS_PER_CANDIDATE = 100  # a space with fewer distinct architectures than asked stops here


def sample_distinct(codec: PathCodec, gen: torch.Generator, n: int) -> list[dict]:
    """Up to `n` distinct uniformly random architectures (fewer only in a space that small)."""
    out, keys = [], set()
    for _ in range(n * MAX_DRAWS_PER_CANDIDATE):
        if len(out) == n:
            break
        encs = codec.sample_all(gen)
        key = codec.key(encs)
        if key not in keys:
            keys.add(key)
            out.append(encs)
    return out


def quick_batches(setup, n_batches: int, batch_size: int, seed: int) -> list:
    """`n_batches` seeded random batches of the validation split, without augmentation."""
    val = setup.val_eval
    loader = EpochBatches(val.dataset, val.indices, batch_size, None, train=True, device=val.device)
    batches = []
    for b in setup.batches(loader.epoch(seed), shard=False):
        if len(batches) == n_batches:
            break
        batches.append(b)
    return batches


def inherited_scores(
    model, codec: PathCodec, archs: Sequence[dict], batches: Sequence, bn: str, like: dict
) -> list[tuple[float, float]]:
    """(accuracy %, mean loss) of each architecture with the supernet's inherited weights."""
    return [score(model, codec.weights(a, like), batches, bn) for a in archs]


def first_segments(setup, n_segments: int) -> list:
    """The first `n_segments` consecutive segments of the validation split (a language model's
    quick score: the hidden state runs on across them)."""
    out = []
    for b in setup.batches(setup.val_eval.epoch(0), shard=False):
        if len(out) == n_segments:
            break
        out.append(b)
    return out


def objective_scores(
    objective: Objective, model, codec: PathCodec, archs: Sequence[dict], batches, like: dict
) -> list[tuple[float, float]]:
    """(valid_<headline>, valid_loss) of each architecture by the objective's evaluation
    (language models: perplexity over consecutive segments, eval mode)."""
    out = []
    for a in archs:
        m = objective.evaluate(model, codec.weights(a, like), batches)
        out.append((m[f"valid_{objective.headline}"], m["valid_loss"]))
    return out


def _keep_lines(path: Path, n: int) -> list[str]:
    """The first n lines of `path` (rewritten to exactly those, atomically)."""
    lines = path.read_text().splitlines()[:n] if path.is_file() else []
    if len(lines) != n:
        raise RuntimeError(f"{path} has {len(lines)} records, the checkpoint expects {n}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)
    return lines


def sample_rank_select(
    setup, cfg, run, resume: bool = False, log: Callable[[str], None] = print, stop_after=None
):
    """EN²AS selection on the supernet in `setup`: quick scores of `select.sample_n` sampled
    architectures, the top `select.sample_top_k` rescored on the whole validation split; see
    the module docstring. Returns the genotype (None when `stop_after` chunks ended it)."""
    strategy = setup.strategy
    model, sel = strategy.model, cfg.select
    codec = path_codec(model, cfg.search.path_sample_none)
    seed = cfg.run.seed if sel.seed < 0 else sel.seed
    gen = torch.Generator().manual_seed(seed)
    archs = sample_distinct(codec, gen, sel.sample_n)
    if len(archs) < sel.sample_n:
        log(f"sample_rank: the space holds only {len(archs)} distinct architectures")
    like = {k: a.detach() for k, a in strategy.arch.alphas().items()}
    # Images: seeded random val batches, accuracy with select.bn; other tasks (language
    # models): their objective's score on the first segments. The objective says which way
    # its headline ranks (accuracy: higher, perplexity: lower).
    objective = setup.objective if setup.objective is not None else ImageObjective()
    h = objective.headline
    if setup.objective is None:
        quick = quick_batches(setup, sel.sample_batches, sel.sample_batch_size, seed)

        def score_archs(idx: list[int], batches) -> list[tuple[float, float]]:
            return inherited_scores(model, codec, [archs[i] for i in idx], batches, sel.bn, like)
    else:
        quick = first_segments(setup, sel.sample_batches)

        def score_archs(idx: list[int], batches) -> list[tuple[float, float]]:
            return objective_scores(objective, model, codec, [archs[i] for i in idx], batches, like)
    top_k = min(sel.sample_top_k, len(archs))
    path = run.path / CANDIDATES_FILE
    records: list[dict] = []
    times = {"quick_time_s": 0.0, "full_time_s": 0.0}
    if resume:
        state = run.load_checkpoint()
        if state.get("done"):
            log(f"{run.path}: the selection is already done")
            return codec.genotype(archs[state["best"]])
        records = [json.loads(x) for x in _keep_lines(path, state["records"])]
        times = state["times"]
        log(f"resumed {run.path} at {len(records)} scores")
    elif path.exists():
        path.unlink()

    def save(done: bool = False, best: int | None = None) -> None:
        run.save_checkpoint(
            {"method": "sample_rank", "records": len(records), "times": times, "done": done,
             "best": best}
        )  # fmt: skip

    def append(new: list[dict]) -> None:
        with open(path, "a") as f:
            for r in new:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())
        records.extend(new)

    chunks = 0
    stages = (("quick", len(archs), quick, "quick_time_s"), ("full", top_k, None, "full_time_s"))
    for stage, total, batches, timer in stages:
        done_here = [r for r in records if r["stage"] == stage]
        if len(done_here) == total:
            continue
        if stage == "full":
            batches = list(setup.batches(setup.val_eval.epoch(0), shard=False))
            ranked = _ranked([r for r in records if r["stage"] == "quick"], objective)
            order = [r["index"] for r in ranked[:top_k]]
        else:
            order = list(range(len(archs)))
        for start in range(len(done_here), total, CHUNK):
            t0 = time.perf_counter()
            idx = order[start : start + CHUNK]
            scores = score_archs(idx, batches)
            append(
                [
                    {"index": i, "stage": stage, "genotype": str(codec.genotype(archs[i])),
                     h: value, "loss": loss}
                    for i, (value, loss) in zip(idx, scores, strict=True)
                ]
            )  # fmt: skip
            times[timer] += time.perf_counter() - t0
            save()
            chunks += 1
            log(f"sample_rank: {stage} scores {len(idx) + start}/{total}")
            if stop_after is not None and chunks >= stop_after:
                return None
    quick_by_index = {r["index"]: r for r in records if r["stage"] == "quick"}
    full = [r for r in records if r["stage"] == "full"]
    # Ties on the full split go to the better quick score, then to the earlier candidate.
    key = objective.rank_key
    best = min(full, key=lambda r: (key(r[h]), key(quick_by_index[r["index"]][h]), r["index"]))
    genotype = codec.genotype(archs[best["index"]])
    run.write_genotype(genotype_to_json(genotype))
    run.write_json(
        RESULT_FILE,
        {
            "method": "sample_rank",
            "genotype": str(genotype),
            "candidates": len(archs),
            "top_k": top_k,
            "quick_batches": len(quick),
            f"quick_{h}": quick_by_index[best["index"]][h],
            f"valid_{h}": best[h],
            "valid_loss": best["loss"],
            "bn": sel.bn if setup.objective is None else "eval",
            **times,
            "select_time_s": times["quick_time_s"] + times["full_time_s"],
        },
    )
    save(done=True, best=best["index"])
    log(f"sample_rank selection: {genotype} (valid_{h} {best[h]:.2f})")
    return genotype


def _ranked(quick: list[dict], objective: Objective) -> list[dict]:
    """Quick-score records best first by the objective's direction (ties: the earlier one)."""
    h = objective.headline
    return sorted(quick, key=lambda r: (objective.rank_key(r[h]), r["index"]))
