"""Forecasting benchmark: exchange-rate under the LSTNet protocol and ETTh1 under the long-term
protocol, for LSTM, GRU, the linear baseline, repeat-last-value and (with --genotype) a
searched DARTS RNN cell, at every horizon; the published numbers (docs/METHODS.md
section 7) beside ours.

    python benchmarks/forecast.py [--out runs/bench-forecast] [--models lstm,gru,linear,repeat]
        [--genotype RUN_DIR_OR_NAME | --search-epochs N] [--datasets exchange,etth1]
        [--lookback 336]
        [--epochs 20] [--hidden 64] [--train-windows 2048] [--highway 0] [--threads 2]
        [--rnn-lr-schedule constant]
        [--exchange PATH] [--ett PATH] [--set KEY=VALUE ...]

- exchange-rate (`exchange_rate.txt[.gz]`, 7588 x 8), LSTNet protocol: 60/20/20 by target row,
  window 168, single step at horizons 3, 6, 12, 24, max-abs scaling over the whole file, L1
  loss (as LSTNet's stock.sh), Adam, every epoch run and the best validation RSE tested; RSE
  and CORR in original units.
- ETTh1 (`ETTh1.csv`), long-term protocol: 12/4/4-month borders, z-score with train
  statistics, look-back --lookback (336; 96 is the Transformer papers' setting), horizons 96,
  192, 336, 720, MSE loss, Adam with the learning rate halved every epoch and early stopping
  with patience 3 (the LTSF codebases' recipe); MSE and MAE on the normalised data over all
  test windows (no drop_last; the drop_last=True figures at batch 32 are in each result.json).

Each (dataset, model, horizon) is one `diffnas train --task forecast` run directory under
--out (`<dataset>/<model>-h<H>`): a finished one is reused, an interrupted one resumed, so the
benchmark continues where it stopped. A directory trained with other settings stops the
benchmark (use another --out). The recurrent models use --hidden, --epochs, at most
--train-windows random training windows per epoch and, with --highway, LSTNet's
autoregressive highway (off by default: a plain core and its output layer); the linear
baseline uses batch 32, every training window and learning rate 0.001 on exchange-rate,
LTSF-Linear's 0.005 (--linear-lr) on ETTh1.
With --search-epochs N the "searched" rows use a cell found by the forecasting search itself
(`configs/darts_rnn_forecast.toml`, N epochs, first order) on each dataset, at that dataset's
protocol and search horizon (exchange-rate h = 24, ETTh1 H = 96) with --hidden and
--train-windows: run directory `<dataset>/search-h<H>` (reused when finished, resumed when
interrupted); its genotype is then trained at every horizon. The search never reads the test
split (weights on train, alphas on validation).
Model selection sees only the validation split; each run scores its test split once, at the
end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path

import torch
from common import run_stage

from diffnas.runs.config import config_to_dict, load_config
from diffnas.runs.rundir import RunDir
from diffnas.search.loop import run_search
from diffnas.train.forecast import FORECAST_MODELS, train_forecast

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SEARCH_CONFIG = REPO / "configs" / "darts_rnn_forecast.toml"
# Settings of how a run was executed, not of what it computes: a finished run directory with
# other values here (e.g. one linked in from another --out) is reused.
HOW_NOT_WHAT = {"run.out", "run.threads", "run.progress", "run.tensorboard"}

# Published references (docs/METHODS.md section 7): LSTNet paper Table 2, exchange-rate, RSE / CORR
# at h = 3, 6, 12, 24.
LSTNET_REFS = {
    "AR": ([0.0228, 0.0279, 0.0353, 0.0445], [0.9734, 0.9656, 0.9526, 0.9357]),
    "LRidge": ([0.0184, 0.0274, 0.0419, 0.0675], [0.9788, 0.9722, 0.9543, 0.9305]),
    "GP": ([0.0239, 0.0272, 0.0394, 0.0580], [0.8713, 0.8193, 0.8484, 0.8278]),
    "RNN-GRU": ([0.0192, 0.0264, 0.0408, 0.0626], [0.9786, 0.9712, 0.9531, 0.9223]),
    "LSTNet-skip": ([0.0226, 0.0280, 0.0356, 0.0449], [0.9735, 0.9658, 0.9511, 0.9354]),
    "LSTNet-Attn": ([0.0276, 0.0321, 0.0448, 0.0590], [0.9717, 0.9656, 0.9499, 0.9339]),
}
# ETTh1 multivariate MSE / MAE at H = 96, 192, 336, 720 (DLinear Table 2 = D-T2, PatchTST
# Table 3 = P-T3); L is the look-back of the published run.
ETT_REFS = {
    "Linear (D-T2, L=336)": ([0.375, 0.418, 0.479, 0.624], [0.397, 0.429, 0.476, 0.592]),
    "DLinear (D-T2, L=336)": ([0.375, 0.405, 0.439, 0.472], [0.399, 0.416, 0.443, 0.490]),
    "NLinear (D-T2, L=336)": ([0.374, 0.408, 0.429, 0.440], [0.394, 0.415, 0.427, 0.453]),
    "PatchTST/42 (P-T3, L=336)": ([0.375, 0.414, 0.431, 0.449], [0.399, 0.421, 0.436, 0.466]),
    "FEDformer (D-T2, L=96)": ([0.376, 0.420, 0.459, 0.506], [0.419, 0.448, 0.465, 0.507]),
    "Informer (D-T2, L=96)": ([0.865, 1.008, 1.107, 1.181], [0.713, 0.792, 0.809, 0.865]),
    "Repeat (D-T2)": ([1.295, 1.325, 1.323, 1.339], [0.713, 0.733, 0.744, 0.756]),
}


def find_file(path: str, names: tuple[str, ...]) -> str:
    """`path` if it is a file, else the first of `names` inside the directory `path`."""
    p = Path(path)
    if p.is_file():
        return str(p)
    for name in names:
        if (p / name).is_file():
            return str(p / name)
    sys.exit(f"no {' or '.join(names)} at {p}; pass the file with --exchange / --ett")


def datasets(args) -> dict[str, dict]:
    """Per dataset: its file, protocol overrides and horizons."""
    out = {}
    if "exchange" in args.datasets:
        path = find_file(args.exchange, ("exchange_rate.txt.gz", "exchange_rate.txt"))
        out["exchange"] = {
            "title": "exchange-rate, LSTNet protocol (window 168, RSE / CORR, original units)",
            "metrics": ("rse", "corr"),
            "horizons": [3, 6, 12, 24],
            "search_horizon": 24,
            "refs": LSTNET_REFS,
            "linear_lr": 0.001,  # the LSTNet recipe's; 0.005 oscillates here
            "set": [
                f"forecast.path={path}",
                "forecast.format=lstnet",
                "forecast.protocol=lstnet",
                "forecast.lookback=168",
                "forecast.loss=l1",
            ],
        }
    if "etth1" in args.datasets:
        path = find_file(args.ett, ("ETTh1.csv",))
        out["etth1"] = {
            "title": f"ETTh1, long-term protocol (look-back {args.lookback}, MSE / MAE, "
            "normalised)",
            "metrics": ("mse", "mae"),
            "horizons": [96, 192, 336, 720],
            "search_horizon": 96,
            "refs": ETT_REFS,
            "linear_lr": args.linear_lr,
            "set": [
                f"forecast.path={path}",
                "forecast.format=ett",
                "forecast.protocol=long_term",
                f"forecast.lookback={args.lookback}",
                "forecast.loss=mse",
                "forecast.lr_schedule=halve",
                "forecast.patience=3",
                "forecast.drop_last_batch=32",
            ],
        }
    return out


def model_overrides(args, spec: dict, model: str) -> list[str]:
    """The settings of one model on one dataset."""
    if model == "linear":
        return ["forecast.model=linear", f"train.lr={spec['linear_lr']}", "data.batch_size=32"]
    if model == "repeat":
        return ["forecast.model=repeat"]
    recurrent = [
        f"forecast.hidden={args.hidden}",
        f"forecast.train_windows={args.train_windows}",
        f"forecast.highway={args.highway}",
        *([f"forecast.lr_schedule={args.rnn_lr_schedule}"] if args.rnn_lr_schedule else []),
    ]
    if model == "searched":
        genotype = spec.get("genotype", args.genotype)
        return ["forecast.model=darts_rnn", f"train.genotype={genotype}", *recurrent]
    return [f"forecast.model={model}", *recurrent]


def search_cell(args, dataset: str, spec: dict) -> str:
    """The forecasting search of the DARTS RNN cell on `dataset` (reused when finished, resumed
    when interrupted); its run directory, whose genotype the "searched" rows train."""
    horizon = spec["search_horizon"]
    path = Path(args.out) / dataset / f"search-h{horizon}"
    if not (path / "genotype.json").exists():
        overrides = [
            *spec["set"],
            f"forecast.horizon={horizon}",
            f"search.epochs={args.search_epochs}",
            f"forecast.hidden={args.hidden}",
            f"forecast.train_windows={args.train_windows}",
            f"forecast.highway={args.highway}",
            f"run.threads={args.threads}",
            f"run.seed={args.seed}",
            "run.progress=false",
            *args.set,
        ]
        t0 = time.perf_counter()
        run_stage(path, str(SEARCH_CONFIG), overrides, run_search, log=lambda s: None)
        print(f"  {dataset} search h={horizon}: {time.perf_counter() - t0:.0f}s", flush=True)
    return str(path)


def run_one(args, dataset: str, spec: dict, model: str, horizon: int) -> dict:
    """One run directory: trained, resumed or reused; its result plus the training time."""
    recipe = str(resources.files("diffnas") / "configs" / "train_forecast.toml")
    path = Path(args.out) / dataset / f"{model}-h{horizon}"
    overrides = [
        *spec["set"],
        f"forecast.horizon={horizon}",
        f"train.epochs={args.epochs}",
        f"run.threads={args.threads}",
        f"run.seed={args.seed}",
        "run.progress=false",
        *model_overrides(args, spec, model),
        *args.set,
    ]
    if (path / "config.toml").exists():
        want = config_to_dict(load_config(recipe, [*overrides, f"run.out={path}"]))
        have = config_to_dict(RunDir(path).read_config())
        diff = [
            f"{s}.{k}: {have[s][k]!r} there, {want[s][k]!r} asked"
            for s in want
            for k in want[s]
            if want[s][k] != have[s][k] and f"{s}.{k}" not in HOW_NOT_WHAT
        ]
        if diff:
            sys.exit(f"{path} was run with other settings ({'; '.join(diff)}); use another --out")
    if not (path / "result.json").exists():
        t0 = time.perf_counter()
        run_stage(path, recipe, overrides, train_forecast, log=lambda s: None)
        print(f"  {dataset} {model} h={horizon}: {time.perf_counter() - t0:.0f}s", flush=True)
    result = json.loads((path / "result.json").read_text())
    result["train_s"] = sum(r.get("epoch_time_s", 0) for r in RunDir(path).read_metrics())
    return result


def table(spec: dict, ours: dict[str, dict[int, dict]]) -> str:
    """One dataset's table: our models, then the published references."""
    m1, m2 = spec["metrics"]
    hs = spec["horizons"]
    head = f"{'model':34s}" + "".join(f"{f'h={h} {m1}/{m2}':>18s}" for h in hs)
    lines = [spec["title"], head + f"{'params':>10s}{'train s':>9s}"]
    for model, per_h in ours.items():
        cells = "".join(
            f"{per_h[h]['test_' + m1]:>9.4f}/{per_h[h]['test_' + m2]:<8.4f}" for h in hs
        )
        params = max(r["params"] for r in per_h.values())
        secs = sum(r["train_s"] for r in per_h.values())
        lines.append(f"{'ours: ' + model:34s}{cells}{params:>10,d}{secs:>9.0f}")
    for name, (a, b) in spec["refs"].items():
        cells = "".join(f"{x:>9.4f}/{y:<8.4f}" for x, y in zip(a, b, strict=True))
        lines.append(f"{'published: ' + name:34s}{cells}")
    return "\n".join(lines)


def main() -> None:
    """Run every stage, print one table per dataset and write summary.json under --out."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="runs/bench-forecast")
    p.add_argument("--datasets", default="exchange,etth1")
    p.add_argument("--models", default="lstm,gru,linear,repeat")
    p.add_argument("--genotype", help="a searched DARTS RNN cell: run directory, file or name")
    p.add_argument(
        "--search-epochs",
        type=int,
        default=0,
        help="search the DARTS RNN cell on each dataset for N epochs first; its genotype is the "
        "searched cell",
    )
    p.add_argument("--lookback", type=int, default=336, help="ETTh1 look-back (336 or 96)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--train-windows", type=int, default=2048, help="recurrent: per epoch; 0 all")
    p.add_argument(
        "--highway", type=int, default=0, help="recurrent: LSTNet's AR highway (stock.sh: 24)"
    )
    p.add_argument("--linear-lr", type=float, default=0.005, help="ETTh1 (LTSF-Linear's)")
    p.add_argument(
        "--rnn-lr-schedule",
        default="",
        help="recurrent models (and the search's final cells): override the protocol's learning "
        "rate schedule, e.g. constant (ETTh1's halving every epoch suits the linear model; it "
        "stops a recurrent one after a few epochs of 2048 windows)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--exchange", default=str(DATA / "lstnet"), help="file or directory")
    p.add_argument("--ett", default=str(DATA / "ett"), help="file or directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.genotype and args.search_epochs:
        p.error("--genotype and --search-epochs exclude each other")
    if args.genotype or args.search_epochs:
        if "darts_rnn" in FORECAST_MODELS.names():
            models.append("searched")
        else:
            print("--genotype given but no darts_rnn core is registered: searched cell skipped")
    else:
        print("no --genotype or --search-epochs: the searched cell is skipped")
    specs = datasets(args)
    summary = {}
    for name, spec in specs.items():
        print(f"{name}: {', '.join(models)} at horizons {spec['horizons']}", flush=True)
        if args.search_epochs and "searched" in models:
            spec["genotype"] = search_cell(args, name, spec)
        ours = {m: {h: run_one(args, name, spec, m, h) for h in spec["horizons"]} for m in models}
        summary[name] = {m: {str(h): r for h, r in per_h.items()} for m, per_h in ours.items()}
        print()
        print(table(spec, ours))
        print()
    print(
        f"budget: {args.epochs} epochs, hidden {args.hidden}, {args.train_windows or 'all'} "
        f"training windows per epoch (recurrent), highway {args.highway or 'off'}, seed "
        f"{args.seed}, {args.threads} threads"
    )
    if "searched" in models:
        for name, spec in specs.items():
            print(f"searched cell on {name}: {spec.get('genotype', args.genotype)}")
    out = Path(args.out) / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
