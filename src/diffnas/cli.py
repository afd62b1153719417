"""The `diffnas` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path

from diffnas.runs.config import ConfigError, config_to_toml, describe_config, load_config


def _quickstart_config() -> str:
    return str(resources.files("diffnas") / "configs" / "quickstart.toml")


def _nb201_hook():
    """Epoch hook adding the table accuracy of NB201 genotypes, when the table is installed."""
    from diffnas.bench import get_table, is_available
    from diffnas.spaces.genotypes import NB201Genotype

    if not is_available():
        print(
            "note: analog-nasbench is not installed; no ground-truth accuracies "
            "(pip install --no-deps analog-nasbench==0.1.3)",
            file=sys.stderr,
        )
        return None

    def hook(genotype) -> dict:
        if not isinstance(genotype, NB201Genotype):
            return {}
        table = get_table()
        return {"nb201_acc": table.accuracy(genotype), "nb201_rank": table.rank(genotype)}

    return hook


# The data name in a default run directory, by task (images: `data.dataset`).
DATA_LABELS = {
    "lm": lambda cfg: Path(cfg.lm.data_dir).name if cfg.lm.data_dir else "ptb",
    "forecast": lambda cfg: Path(cfg.forecast.path).name.split(".")[0] or "series",
}


def _data_label(cfg, task: str) -> str:
    """What a default run directory calls the run's data."""
    label = DATA_LABELS.get(task)
    return label(cfg) if label else cfg.data.dataset


def _create_run(cfg, run_kind: str, **name):
    """A new run directory of `run_kind` for `cfg` (`resolve_out(cfg, **name)`), made by rank
    0 alone under torchrun: every rank gets rank 0's path (the default name holds the time) and
    stops with rank 0's error, instead of waiting for it forever."""
    from diffnas.runs import distributed
    from diffnas.runs.rundir import RunDir, RunDirError, resolve_out

    cfg.run.out = distributed.broadcast_object(str(resolve_out(cfg, **name)))
    run = RunDir(cfg.run.out)
    error = None
    if distributed.is_main():
        try:
            run.create(cfg, run_kind)
        except RunDirError as e:
            error = str(e)
    error = distributed.broadcast_object(error)
    if error:
        raise RunDirError(error)
    return run


@contextlib.contextmanager
def _started(run, args):
    """Run a command's work in `run`: Ctrl-C then names the command that resumes it, and a run
    that fails or is interrupted before its first checkpoint is removed again (rank 0), so no
    half-made run directory is left behind."""
    from diffnas.runs import distributed

    args.resume_hint = run.resume_command()
    try:
        yield
    except BaseException:
        if distributed.is_main() and run.discard_unstarted():
            args.resume_hint = None
            args.removed_run = run.path
        raise


def _resumed_run(args, kind: str):
    """(run, config) of `--resume RUN_DIR` for a run of `kind`, which takes its own config."""
    from diffnas.runs.rundir import RunDir

    if args.set or args.config or args.out:
        raise ConfigError("--resume uses the run's own config.toml; drop --config/--set/--out")
    run = RunDir.open_existing(args.resume, kind)
    return run, run.read_config()


def _new_config(args, default: str):
    """The config of a new run: --config (else `default`), --set, and --out as run.out."""
    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"run.out={json.dumps(args.out)}")
    return load_config(args.config or default, overrides)


def cmd_search(args) -> int:
    """`diffnas search`: run or resume a search (under torchrun: one process per rank)."""
    from diffnas.runs import distributed
    from diffnas.search.loop import resolve_device, run_search, search_task

    if args.resume:
        run, cfg = _resumed_run(args, "search")
        distributed.init_from_env(resolve_device(cfg.run.device))
    else:
        cfg = _new_config(args, _quickstart_config())
        distributed.init_from_env(resolve_device(cfg.run.device))
        run = _create_run(cfg, "search", dataset=_data_label(cfg, search_task(cfg)))
        if distributed.is_main():
            print(f"run directory: {run.path}" + ("" if args.config else " (quickstart config)"))
    main = distributed.is_main()
    hooks = [h for h in [_nb201_hook()] if cfg.space.name == "nb201" and h] if main else []
    t0 = time.perf_counter()
    try:
        with _started(run, args):
            genotype = run_search(cfg, run, resume=bool(args.resume), hooks=hooks)
    finally:
        distributed.cleanup()
    if not main:
        return 0
    print(f"\nsearch finished in {time.perf_counter() - t0:.0f}s; genotype: {genotype}")
    print(f"written to {Path(run.path) / 'genotype.json'}")
    if hooks:
        from diffnas.bench import describe

        print(describe(str(run.path)))
    return 0


NO_GENOTYPE = (
    "no genotype to train: pass --genotype NAME_OR_FILE_OR_RUN_DIR (e.g. DARTS_V2; "
    "`diffnas info --list` lists the published ones) or set train.genotype"
)


def _train_recipe(genotype, task: str) -> str:
    """The embedded training recipe: `configs/train_<task>.toml` when the task has its own
    (e.g. lm, forecast), else that of the genotype's space (`configs/train_<family>.toml`)."""
    from diffnas.spaces.final import space_family

    configs = resources.files("diffnas") / "configs"
    if (configs / f"train_{task}.toml").is_file():
        return str(configs / f"train_{task}.toml")
    if genotype is None:
        raise ConfigError(NO_GENOTYPE)
    return str(configs / f"train_{space_family(genotype)}.toml")


def _genotype_task(genotype) -> str:
    """The task a genotype's cell is trained on by default: its search space's (`lm` for a
    DARTS RNN cell), else `image`."""
    from diffnas.spaces import SPACES, space_task
    from diffnas.spaces.final import space_family

    family = None if genotype is None else space_family(genotype)
    return space_task(family) if family in SPACES else "image"


def _train_config(args):
    """The resolved config of `diffnas train` / `diffnas info`: --config (or the embedded recipe
    of the task or of the genotype's space), then --set, then --genotype and --task. The
    genotype is None when none is given (tasks whose baselines need none, e.g. an LSTM)."""
    from diffnas.spaces.genotypes import load_genotype
    from diffnas.train import TASKS

    task = getattr(args, "task", None)
    if task and task not in TASKS:
        raise ConfigError(f"--task {task!r}: {TASKS.unknown(task)}")
    overrides = list(args.set or [])
    for key, value in (("genotype", args.genotype), ("task", task)):
        if value:
            overrides.append(f"train.{key}={json.dumps(value)}")
    cfg = load_config(args.config, overrides) if args.config else None
    name = cfg.train.genotype if cfg else args.genotype
    genotype = load_genotype(name) if name else None
    if cfg is None:
        cfg = load_config(_train_recipe(genotype, task or _genotype_task(genotype)), overrides)
    if genotype is None and cfg.train.task == "image":
        raise ConfigError(NO_GENOTYPE)
    return cfg, genotype


def cmd_train(args) -> int:
    """`diffnas train`: train a genotype's final network from scratch, or resume that (under
    torchrun, image tasks: one process per rank)."""
    from diffnas.runs import distributed
    from diffnas.runs.rundir import RunDir
    from diffnas.search.loop import resolve_device
    from diffnas.spaces.final import check_final_config, space_family
    from diffnas.train import TASKS, check_world_size

    if args.resume:
        if args.set or args.config or args.out or args.genotype:
            raise ConfigError("--resume uses the run's own config.toml; drop the other options")
        run = RunDir.open_existing(args.resume, "train")
        cfg = run.read_config()
        check_world_size(cfg.train.task)
        distributed.init_from_env(resolve_device(cfg.run.device))
    else:
        cfg, genotype = _train_config(args)
        if cfg.train.task == "image":
            check_final_config(genotype, cfg.train)  # before the run directory exists
        check_world_size(cfg.train.task)
        if args.out:
            cfg.run.out = args.out
        distributed.init_from_env(resolve_device(cfg.run.device))
        kind = space_family(genotype) if cfg.train.task == "image" else cfg.train.task
        run = _create_run(
            cfg, "train", kind=f"train-{kind}", dataset=_data_label(cfg, cfg.train.task)
        )
        if distributed.is_main():
            print(f"run directory: {run.path}")
    main, t0 = distributed.is_main(), time.perf_counter()
    try:
        with _started(run, args):
            result = TASKS.get(cfg.train.task)(cfg, run, resume=bool(args.resume))
    finally:
        distributed.cleanup()
    if main:
        print(f"\ntraining finished in {time.perf_counter() - t0:.0f}s: {_describe_result(result)}")
        print(f"written to {Path(run.path) / 'result.json'}")
    return 0


def _describe_result(result: dict) -> str:
    """The headline of a training result: its test metrics and parameter count."""
    tests = [f"{k} {v:.4g}" for k, v in result.items() if k.startswith("test_") and _is_num(v)]
    params = f"{result['params'] / 1e6:.3f}M parameters" if "params" in result else ""
    return ", ".join([*tests, params]) if params else ", ".join(tests)


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--input {text!r}: expected CxHxW with positive integers, e.g. 3x32x32")
    return tuple(int(p) for p in parts)


def _check_classes(n: int) -> None:
    if n < 2:
        raise ConfigError(
            f"--classes {n}: a classifier needs at least 2 classes, e.g. --classes 10"
        )


def cmd_info(args) -> int:
    """`diffnas info GENOTYPE`: parameters and multiply-adds of its final network."""
    from diffnas.spaces.final import build_final_network, count_macs, count_params, space_family
    from diffnas.spaces.published import GENOTYPES

    if args.list or not args.genotype:
        for name in GENOTYPES.names():
            p = GENOTYPES.get(name)
            params = f"{p.params_m}M" if p.params_m else "-"
            print(f"{name:16s} {params:>6s}  {p.source}")
        return 0
    cfg, genotype = _train_config(args)
    if space_family(genotype) in ("darts_rnn", "pair_rnn"):
        cfg.lm.core = space_family(genotype)  # the searched cell's core
        return _info_language_model(args, cfg, genotype)
    size = cfg.data.image_size or 32
    shape = _parse_shape(args.input or f"3x{size}x{size}")
    _check_classes(args.classes)
    model = build_final_network(genotype, cfg.train, shape[0], args.classes)
    print(f"genotype: {genotype}")
    depth = {"darts": f"train.layers={cfg.train.layers}", "nb201": f"train.N={cfg.train.N}"}
    print(
        f"network: {type(model).__name__} (train.C={cfg.train.C}, {depth[space_family(genotype)]})"
    )
    print(f"input: {'x'.join(map(str, shape))}, {args.classes} classes")
    print(f"parameters: {count_params(model):,} ({count_params(model) / 1e6:.3f}M)")
    print(f"parameters with the auxiliary head: {count_params(model, auxiliary=True):,}")
    print(f"multiply-adds: {count_macs(model, shape) / 1e6:.1f}M")
    _print_source(args.genotype)
    return 0


def _print_source(name: str) -> None:
    """The source (and reported size) of a published genotype; nothing for other genotypes."""
    from diffnas.spaces.published import GENOTYPES

    if GENOTYPES.lookup(name):
        p = GENOTYPES.get(GENOTYPES.lookup(name))
        reported = f"; reported: {p.params_m}M parameters" if p.params_m else ""
        print(f"source: {p.source}{reported}")


def _info_language_model(args, cfg, genotype) -> int:
    """`diffnas info` of a recurrent cell's genotype: the language model of the `[lm]` recipe."""
    from diffnas.spaces.final import count_params
    from diffnas.train.lm import build_language_model

    if args.vocab < 2:
        raise ConfigError(f"--vocab {args.vocab}: a vocabulary needs at least 2 words")
    model = build_language_model(cfg.lm, args.vocab, genotype)
    print(f"genotype: {genotype}")
    print(f"network: language model, lm.core={cfg.lm.core}, lm.nhid={cfg.lm.nhid}, tied decoder")
    print(f"vocabulary: {args.vocab:,} words (PTB's; --vocab for another corpus)")
    print(f"parameters: {count_params(model):,} ({count_params(model) / 1e6:.3f}M)")
    _print_source(args.genotype)
    return 0


def cmd_export(args) -> int:
    """`diffnas export RUN_DIR_OR_GENOTYPE --format ...`: write the final network to a file."""
    from diffnas.export import SUFFIX, export, is_training_run, trained_network
    from diffnas.spaces.final import build_final_network
    from diffnas.spaces.published import GENOTYPES

    if is_training_run(args.source):
        if args.set or args.config:
            raise ConfigError("a training run is exported with its own config; drop --config/--set")
        model, genotype, shape, cfg = trained_network(args.source)
        out = args.out or Path(args.source) / "export" / f"network{SUFFIX[args.format]}"
        what = f"trained weights of {args.source}"
    else:
        args.genotype = args.source
        cfg, genotype = _train_config(args)
        shape = _parse_shape(args.input)
        _check_classes(args.classes)
        model = build_final_network(genotype, cfg.train, shape[0], args.classes)
        name = GENOTYPES.lookup(args.source) or "genotype"
        default = Path("exports") / f"{name}{SUFFIX[args.format]}"
        if Path(args.source).is_dir():  # a search or selection run directory
            default = Path(args.source) / "export" / f"network{SUFFIX[args.format]}"
        out = args.out or default
        what = "untrained weights (export a `diffnas train` run directory for trained ones)"
    path = export(model, genotype, shape, cfg, args.format, out)
    print(f"wrote {path}: {args.format}, {type(model).__name__}, {what}")
    print(f"input: a float batch [B, {', '.join(map(str, shape))}], normalised as in training")
    return 0


def cmd_sweep(args) -> int:
    """`diffnas sweep`: one search per seed (resumable), then the summary over the seeds."""
    from diffnas.runs import sweep

    seeds = sweep.parse_seeds(args.seeds)
    config = args.config or _quickstart_config()
    load_config(config, args.set or [])  # a bad config fails here, not in every seed
    name = Path(args.config).stem if args.config else "quickstart"
    out = Path(args.out or Path("runs") / f"sweep-{name}")
    jobs = args.jobs or min(len(seeds), max(1, (os.cpu_count() or 1) // 2))
    where = f"on the Ray cluster {args.ray_address}" if args.ray_address else f"{jobs} at a time"
    print(f"sweep of {len(seeds)} seeds in {out}, {where}")
    failed = sweep.run_sweep(
        config, list(args.set or []), seeds, out, jobs, ray_address=args.ray_address
    )
    summary = sweep.write_summary(out, seeds)
    print(sweep.format_summary(summary))
    print(f"written to {out / sweep.SUMMARY_FILE}")
    if failed:
        print(f"seeds {failed} failed; run the same command again to resume them", file=sys.stderr)
        return 1
    return 0


def cmd_random_search(args) -> int:
    """`diffnas random-search`: sample, train standalone, keep the best by validation."""
    from diffnas.search.random_search import run_random_search

    if args.resume:
        run, cfg = _resumed_run(args, "random_search")
    else:
        default = str(resources.files("diffnas") / "configs" / "random_search.toml")
        cfg = _new_config(args, default)
        run = _create_run(cfg, "random_search", kind=f"random-{cfg.space.name}")
        print(f"run directory: {run.path}")
    hooks = [h for h in [_nb201_hook()] if cfg.space.name == "nb201" and h]
    t0 = time.perf_counter()
    with _started(run, args):
        genotype = run_random_search(cfg, run, resume=bool(args.resume), hooks=hooks)
    print(
        f"\nrandom search finished in {time.perf_counter() - t0:.0f}s; best by validation "
        f"accuracy: {genotype}"
    )
    print(f"written to {Path(run.path) / 'genotype.json'}")
    if hooks:
        from diffnas.bench import describe

        print(describe(str(run.path)))
    return 0


def cmd_select(args) -> int:
    """`diffnas select RUN_DIR --method ...`: turn a finished search's supernet into a genotype."""
    from diffnas.select import open_select_dir, run_select

    cfg, run = open_select_dir(
        args.run_dir, args.method, args.set or [], out=args.out, resume=bool(args.resume)
    )
    print(f"selection directory: {run.path}")
    t0 = time.perf_counter()
    with _started(run, args):
        genotype = run_select(cfg, args.run_dir, run, resume=bool(args.resume))
    print(f"\nselection finished in {time.perf_counter() - t0:.0f}s; genotype: {genotype}")
    print(f"written to {Path(run.path) / 'genotype.json'}")
    if cfg.space.name == "nb201":
        from diffnas.bench import describe, is_available

        if is_available():
            print(describe(str(run.path)))
    return 0


def cmd_bench(args) -> int:
    """`diffnas bench nb201 ARCH_OR_RUN_DIR`."""
    from diffnas.bench import describe

    print(describe(args.arch))
    return 0


def cmd_config(args) -> int:
    """`diffnas config`: print the resolved config, or document every key."""
    if args.doc:
        print(describe_config())
    else:
        print(config_to_toml(load_config(args.config or _quickstart_config(), args.set or [])))
    return 0


def cmd_report(args) -> int:
    """`diffnas report RUN_DIR`: write the run's HTML report and its figures."""
    from diffnas.viz import write_report

    index = write_report(args.run_dir, args.out)
    print(f"wrote {index} (open it in a browser; the figures lie beside it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `diffnas` command."""
    p = argparse.ArgumentParser(prog="diffnas", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="run a search (no --config: the quickstart)")
    s.add_argument("--config", help="TOML config file (see configs/ and `diffnas config --doc`)")
    s.add_argument("--out", help="run directory (default runs/<space>-<dataset>-<time>)")
    s.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set search.epochs=10 (repeatable)",
    )
    s.add_argument("--resume", metavar="RUN_DIR", help="resume the run in RUN_DIR exactly")
    s.set_defaults(func=cmd_search)

    t = sub.add_parser("train", help="train a genotype's final network from scratch")
    t.add_argument(
        "--genotype",
        help="published name (e.g. DARTS_V2), NB201 string, Genotype(...) text, genotype.json "
        "or run directory",
    )
    t.add_argument("--task", help="what to train (train.task); default: image")
    t.add_argument(
        "--config", help="TOML config (default: the paper recipe of the genotype's space)"
    )
    t.add_argument("--out", help="run directory (default runs/train-<space>-<dataset>-<time>)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--resume", metavar="RUN_DIR", help="resume the training in RUN_DIR exactly")
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("info", help="parameters and multiply-adds of a genotype's final network")
    i.add_argument("genotype", nargs="?", help="as for `train --genotype`; none: --list")
    i.add_argument("--list", action="store_true", help="list the published genotypes")
    i.add_argument("--config", help="TOML config sizing the network (default: the recipe)")
    i.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. train.C=16")
    i.add_argument(
        "--input",
        help="input shape CxHxW (default: 3 x data.image_size squared when the config sets it, "
        "else CIFAR's 3x32x32)",
    )
    i.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    i.add_argument(
        "--vocab", type=int, default=10000, help="RNN genotypes: vocabulary size (default PTB's)"
    )
    i.set_defaults(func=cmd_info)

    rs = sub.add_parser(
        "random-search",
        help="the random-search baseline: sample architectures, train each standalone, keep "
        "the best by validation accuracy",
    )
    rs.add_argument(
        "--config", help="TOML config (default: the embedded NB201 / Fashion-MNIST baseline)"
    )
    rs.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    rs.add_argument("--out", help="run directory (default runs/random-<space>-<data>-<time>)")
    rs.add_argument("--resume", metavar="RUN_DIR", help="resume the random search in RUN_DIR")
    rs.set_defaults(func=cmd_random_search)

    e = sub.add_parser("export", help="write a genotype's final network as a file")
    e.add_argument("source", help="a `diffnas train` run directory, or a genotype as for train")
    e.add_argument(
        "--format",
        choices=("state_dict", "torchscript", "onnx"),
        default="onnx",
        help="file format (default: onnx)",
    )
    e.add_argument(
        "--out",
        help="output file (default: RUN_DIR/export/network.<ext> for a run directory, "
        "./exports/<NAME>.<ext> for a published genotype, ./exports/genotype.<ext> otherwise)",
    )
    e.add_argument("--config", help="genotype sources: TOML config sizing the network")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. train.C=16")
    e.add_argument("--input", default="3x32x32", help="genotype sources: input shape CxHxW")
    e.add_argument("--classes", type=int, default=10, help="genotype sources: classes")
    e.set_defaults(func=cmd_export)

    w = sub.add_parser("sweep", help="run a search config with several seeds and summarise")
    w.add_argument("--config", help="TOML config (default: the quickstart)")
    w.add_argument("--seeds", default="0-3", help="e.g. 0-3 or 0,2,5 (default 0-3)")
    w.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    w.add_argument("--jobs", type=int, default=0, help="seeds at once (default: cores / 2)")
    w.add_argument("--out", help="sweep directory (default runs/sweep-<config name>)")
    w.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="run the seeds as tasks on this existing Ray cluster (e.g. auto, or ray://host:10001; "
        "needs ray, diffnas on the workers and the sweep directory on a shared file system)",
    )
    w.set_defaults(func=cmd_sweep)

    sel = sub.add_parser(
        "select", help="select a genotype from a finished search's supernet (magnitude, PT, sample)"
    )
    sel.add_argument("run_dir", metavar="RUN_DIR", help="a finished `diffnas search` run directory")
    sel.add_argument(
        "--method",
        default="perturbation",
        help="magnitude (the DARTS rule), perturbation (DARTS-PT) or sample_rank (EN²AS: sample, "
        "score with inherited weights, rescore the top); default perturbation",
    )
    sel.add_argument("--out", help="selection directory (default RUN_DIR/select-<method>)")
    sel.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="e.g. --set select.proj_intv=2"
    )
    sel.add_argument(
        "--resume", action="store_true", help="continue the interrupted selection exactly"
    )
    sel.set_defaults(func=cmd_select)

    b = sub.add_parser("bench", help="look up ground truth in a benchmark table")
    b.add_argument("table", choices=["nb201"])
    b.add_argument("arch", help="NB201 arch string, genotype.json, or run directory")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("config", help="print the resolved config, or --doc for every key")
    c.add_argument("--config")
    c.add_argument("--set", action="append", metavar="KEY=VALUE")
    c.add_argument("--doc", action="store_true", help="document every config key")
    c.set_defaults(func=cmd_config)

    r = sub.add_parser(
        "report",
        help="HTML report of a run: curves, alpha heatmaps, cell diagrams, decisions",
        description="Write a self-contained HTML report of a search, training or selection run "
        "directory (config, loss/accuracy curves, ground truth, edge-weight heatmaps, cell "
        "diagrams, selection decisions, timing, collapse diagnostics). It works offline; the "
        "PNG figures lie beside index.html. Needs matplotlib; graphviz draws the cells when "
        "installed.",
    )
    r.add_argument("run_dir", metavar="RUN_DIR", help="a search, training or selection directory")
    r.add_argument("--out", help="report directory (default RUN_DIR/report)")
    r.set_defaults(func=cmd_report)
    return p


def main(argv=None) -> int:
    """Entry point of the `diffnas` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # Commands set `resume_hint` once their run directory exists.
        hint = getattr(args, "resume_hint", None)
        if hint is None and args.command == "sweep":
            hint = "the same diffnas sweep command"
        removed = getattr(args, "removed_run", None)
        if removed is not None:
            hint = None
            print(
                f"\n{removed} removed: nothing to resume before the first checkpoint",
                file=sys.stderr,
            )
        print("\ninterrupted" + (f"; resume with `{hint}`" if hint else ""), file=sys.stderr)
        return 130
    except _user_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        # Under torchrun every rank meets the same error; one message is enough.
        if os.environ.get("RANK", "0") == "0":
            print(f"diffnas: error: {msg}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by the user's input: printed as one clear line, without a traceback."""
    from diffnas.bench.nb201 import BenchmarkError
    from diffnas.data import DataFormatError, DataNotFoundError
    from diffnas.export import ExportError
    from diffnas.runs.nonfinite import NonFiniteError
    from diffnas.runs.rundir import RunDirError
    from diffnas.spaces import SpaceError
    from diffnas.spaces.final import FinalNetworkError
    from diffnas.spaces.genotypes import GenotypeError
    from diffnas.viz import ReportError

    return (
        ConfigError,
        NonFiniteError,
        SpaceError,
        FinalNetworkError,
        ExportError,
        RunDirError,
        GenotypeError,
        DataNotFoundError,
        DataFormatError,
        BenchmarkError,
        ReportError,
    )


if __name__ == "__main__":
    sys.exit(main())
