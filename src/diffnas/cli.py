"""The `diffnas` command."""

from __future__ import annotations

import argparse
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


def cmd_search(args) -> int:
    """`diffnas search`: run or resume a search (under torchrun: one process per rank)."""
    from diffnas.runs.rundir import RunDir, RunDirError, resolve_out
    from diffnas.search import distributed
    from diffnas.search.loop import resolve_device, run_search

    if args.resume:
        if args.set or args.config or args.out:
            raise ConfigError("--resume uses the run's own config.toml; drop --config/--set/--out")
        run = RunDir.open_existing(args.resume)
        cfg = run.read_config()
        distributed.init_from_env(resolve_device(cfg.run.device))
    else:
        cfg_path = args.config or _quickstart_config()
        overrides = list(args.set or [])
        if args.out:
            overrides.append(f"run.out={json.dumps(args.out)}")
        cfg = load_config(cfg_path, overrides)
        distributed.init_from_env(resolve_device(cfg.run.device))
        # The default name holds the time: rank 0's name for every rank; only rank 0 creates it.
        cfg.run.out = distributed.broadcast_object(str(resolve_out(cfg)))
        run = RunDir(cfg.run.out)
        error = None
        if distributed.is_main():
            try:
                run.create(cfg)
            except RunDirError as e:
                error = str(e)
        # Every rank stops with rank 0's error, instead of waiting for it forever.
        error = distributed.broadcast_object(error)
        if error:
            raise RunDirError(error)
        if distributed.is_main():
            print(f"run directory: {run.path}" + ("" if args.config else " (quickstart config)"))
    main = distributed.is_main()
    hooks = [h for h in [_nb201_hook()] if cfg.space.name == "nb201" and h] if main else []
    t0 = time.perf_counter()
    try:
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

    b = sub.add_parser("bench", help="look up ground truth in a benchmark table")
    b.add_argument("table", choices=["nb201"])
    b.add_argument("arch", help="NB201 arch string, genotype.json, or run directory")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("config", help="print the resolved config, or --doc for every key")
    c.add_argument("--config")
    c.add_argument("--set", action="append", metavar="KEY=VALUE")
    c.add_argument("--doc", action="store_true", help="document every config key")
    c.set_defaults(func=cmd_config)
    return p


def main(argv=None) -> int:
    """Entry point of the `diffnas` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted; resume with `diffnas search --resume RUN_DIR`", file=sys.stderr)
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
    from diffnas.runs.rundir import RunDirError
    from diffnas.spaces.genotypes import GenotypeError

    return (
        ConfigError,
        RunDirError,
        GenotypeError,
        DataNotFoundError,
        DataFormatError,
        BenchmarkError,
    )


if __name__ == "__main__":
    sys.exit(main())
