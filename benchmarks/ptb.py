"""Penn Treebank: a DARTS RNN cell found by our own search vs the published DARTS cell
(DARTS_RNN_V2) vs an LSTM vs a GRU, trained at the same size with the same recipe and budget.

    python benchmarks/ptb.py [--nhid 200] [--epochs 3] [--train-tokens 200000]
        [--search-nhid 200] [--search-epochs 2] [--search-tokens 100000] [--search-batch 64]
        [--valid-tokens 0] [--test-batch 10] [--models searched,DARTS_RNN_V2,lstm,gru]
        [--threads 2] [--set KEY=VALUE ...] [--out runs/bench-ptb]
    python benchmarks/ptb.py --step-time 300x256,64x32 [--threads 2]

Stages (each reuses a finished run directory under --out and resumes an interrupted one):
1. unless --searched gives a finished darts_rnn search: a first-order DARTS RNN search
   (configs/darts_rnn_ptb.toml: SGD lr 20, wd 5e-7, clip 0.25, alphas Adam 3e-3, dropouts of
   the original) at --search-nhid units, batch --search-batch, on the first --search-tokens
   PTB training tokens (weights) and the valid split (alphas), --search-epochs epochs;
2. for each model, `diffnas train --task lm` with the PTB recipe (src/diffnas/configs/
   train_lm.toml: SGD lr 20 then ASGD on the non-monotone trigger, batch 64, randomised BPTT
   35, wd 8e-7, clip 0.25, the original's dropouts and TAR) at --nhid units for --epochs
   epochs on the first --train-tokens training tokens; validation on the first --valid-tokens
   valid tokens (0: all), the final test on the whole test split at batch --test-batch.
   The LSTM and GRU get the same embedding, dropouts (without the DARTS cell's own h/x masks),
   tied decoder, optimiser and budget.
Prints valid and test perplexity of the best-validation model, parameters and the training wall
time (the sum of the epoch times in metrics.jsonl, so resumed runs count only their epochs).

--step-time measures instead the time of one search step (orders 1 and 2) and one final
training step (DARTS_RNN_V2, LSTM) for each UNITSxBATCH at BPTT 35 and a 10,000-word
vocabulary, on random tokens, and exits.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import run_stage

from diffnas.arch import ArchParameters
from diffnas.runs.config import load_config
from diffnas.runs.rundir import RunDir
from diffnas.search import STRATEGIES
from diffnas.search.loop import run_search
from diffnas.search.objectives import OBJECTIVES
from diffnas.spaces.darts_rnn import build_search_supernet
from diffnas.spaces.genotypes import load_genotype
from diffnas.train.lm import LMTrainer, build_language_model, train_lm

SEARCH_CONFIG = "configs/darts_rnn_ptb.toml"
TRAIN_CONFIG = "src/diffnas/configs/train_lm.toml"
VOCAB = 10000


def search_stage(args) -> tuple[str, float]:
    """The run directory of the search (ours, or --searched) and its wall time."""
    if args.searched:
        return args.searched, 0.0
    path = Path(args.out) / "search"
    if not (path / "genotype.json").exists():
        overrides = [
            f"lm.emsize={args.search_nhid}",
            f"lm.nhid={args.search_nhid}",
            f"data.batch_size={args.search_batch}",
            f"data.limit={args.search_tokens}",
            f"lm.valid_limit={args.valid_tokens}",
            f"search.epochs={args.search_epochs}",
            "search.order=1",
            f"run.threads={args.threads}",
            "run.progress=false",
            *args.set_search,
        ]
        run_stage(
            path,
            SEARCH_CONFIG,
            overrides,
            run_search,
            log=lambda s: print("  search:", s.splitlines()[0], flush=True),
        )
    seconds = sum(r.get("epoch_time_s", 0) for r in RunDir(path).read_metrics())
    return str(path), seconds


def train_stage(args, name: str, genotype: str | None) -> dict:
    """Final training of one model (reused / resumed under --out); its result plus wall_s."""
    path = Path(args.out) / f"train-{name}"
    core = "darts_rnn" if genotype else name
    if not (path / "result.json").exists():
        overrides = [
            f"lm.core={core}",
            f"lm.emsize={args.nhid}",
            f"lm.nhid={args.nhid}",
            f"train.epochs={args.epochs}",
            f"data.limit={args.train_tokens}",
            f"lm.valid_limit={args.valid_tokens}",
            f"lm.test_batch_size={args.test_batch}",
            f"run.threads={args.threads}",
            "run.progress=false",
            *([f"train.genotype={json.dumps(genotype)}"] if genotype else []),
            *args.set,
        ]
        run_stage(
            path,
            TRAIN_CONFIG,
            overrides,
            train_lm,
            log=lambda s: print(f"  {name}:", s.splitlines()[0], flush=True),
        )
    result = json.loads((path / "result.json").read_text())
    epochs = [r for r in RunDir(path).read_metrics() if r.get("kind") == "epoch"]
    return {**result, "wall_s": sum(r["epoch_time_s"] for r in epochs)}


def _random_batch(T: int, B: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, VOCAB, (T, B)), torch.randint(0, VOCAB, (T, B))


def _time(step, make_batch, n: int) -> float:
    """Mean seconds of step(make_batch()) over n calls (batches drawn outside the timing),
    after one warm-up call."""
    step(make_batch())
    total = 0.0
    for _ in range(n):
        batch = make_batch()
        t0 = time.perf_counter()
        step(batch)
        total += time.perf_counter() - t0
    return total / n


def step_times(sizes: str, repeats: int) -> None:
    """Seconds per search step (orders 1, 2) and per final training step, per size."""
    print(f"{'units x batch':>14s} {'search 1st':>10s} {'search 2nd':>10s} "
          f"{'DARTS_RNN_V2':>12s} {'lstm':>8s}   (s/step, bptt 35, {VOCAB} words, "
          f"{torch.get_num_threads()} threads)")  # fmt: skip
    for size in sizes.split(","):
        nhid, batch = (int(v) for v in size.lower().split("x"))

        def pair(nhid=nhid, batch=batch):
            return _random_batch(35, batch), _random_batch(35, batch)

        row = []
        for order in (1, 2):
            cfg = load_config(
                SEARCH_CONFIG, [f"lm.emsize={nhid}", f"lm.nhid={nhid}", f"search.order={order}"]
            )
            torch.manual_seed(0)
            net = build_search_supernet(cfg.space, VOCAB, cfg.lm, False)
            arch = ArchParameters(net.arch_shapes())
            search = STRATEGIES.get("darts")(
                net, arch, cfg.search, 100, objective=OBJECTIVES.get("lm")(cfg)
            )
            search.on_epoch_start(0)
            row.append(_time(lambda b, s=search: s.step(*b), pair, repeats))
        for core in ("darts_rnn", "lstm"):
            overrides = [f"lm.emsize={nhid}", f"lm.nhid={nhid}", f"lm.core={core}"]
            cfg = load_config(TRAIN_CONFIG, overrides)
            genotype = load_genotype("DARTS_RNN_V2") if core == "darts_rnn" else None
            trainer = LMTrainer(build_language_model(cfg.lm, VOCAB, genotype), cfg.train, cfg.lm)
            row.append(_time(lambda b, t=trainer: t.step(*b[0], None), pair, repeats))
        print(f"{size:>14s} {row[0]:>10.3f} {row[1]:>10.3f} {row[2]:>12.3f} {row[3]:>8.3f}")


def main() -> None:
    """Run the stages and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nhid", type=int, default=200, help="units of the final models")
    p.add_argument("--epochs", type=int, default=3, help="final training epochs")
    p.add_argument("--train-tokens", type=int, default=200000, help="0: all 929,589")
    p.add_argument("--search-nhid", type=int, default=200)
    p.add_argument("--search-epochs", type=int, default=2)
    p.add_argument("--search-tokens", type=int, default=100000)
    p.add_argument("--search-batch", type=int, default=64)
    p.add_argument("--valid-tokens", type=int, default=0, help="0: all 73,760")
    p.add_argument("--test-batch", type=int, default=10, help="the original tests at 1")
    p.add_argument("--models", default="searched,DARTS_RNN_V2,lstm,gru")
    p.add_argument("--searched", help="a finished darts_rnn search run directory to use")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override of every final training, e.g. train.lr=10",
    )
    p.add_argument(
        "--set-search",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override of the search",
    )
    p.add_argument("--out", default="runs/bench-ptb")
    p.add_argument("--step-time", metavar="SIZES", help="e.g. 300x256,64x32: time steps, exit")
    p.add_argument("--repeats", type=int, default=3, help="--step-time: steps timed per cell")
    args = p.parse_args()  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.step_time:
        step_times(args.step_time, args.repeats)
        return
    models = args.models.split(",")
    searched, search_s = search_stage(args) if "searched" in models else (None, 0.0)
    rows = {}
    for name in models:
        if name == "searched":
            genotype = searched
        elif name in ("lstm", "gru"):
            genotype = None
        else:
            genotype = name  # a published RNN genotype (or a path)
        rows[name] = train_stage(args, name, genotype)

    print()
    print(
        f"PTB, {args.nhid} units, {args.epochs} epochs on the first {args.train_tokens or 'all'} "
        f"training tokens, train_lm recipe (SGD 20 -> ASGD), {torch.get_num_threads()} threads"
        + (f"; overrides: {' '.join(args.set)}" if args.set else "")
    )
    if searched:
        print(
            f"search: {args.search_epochs} epochs, {args.search_nhid} units, batch "
            f"{args.search_batch}, first {args.search_tokens} tokens, {search_s:.0f}s: "
            f"{load_genotype(searched)}"
        )
    print(f"{'model':14s} {'valid ppl':>9s} {'test ppl':>9s} {'params':>9s} {'asgd@':>6s} "
          f"{'wall s':>7s}")  # fmt: skip
    for name, r in rows.items():
        print(
            f"{name:14s} {r['valid_ppl']:>9.2f} {r['test_ppl']:>9.2f} {r['params'] / 1e6:>8.3f}M "
            f"{r['asgd_epoch']:>6d} {r['wall_s']:>7.0f}"
        )


if __name__ == "__main__":
    main()
