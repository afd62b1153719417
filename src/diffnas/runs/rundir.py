"""The run directory: resolved config, metrics and genotype logs, atomic checkpoints.

Layout of a run directory:

- `run.json`: what kind of run this is (`search`, `train`, `select`, `random_search`: RUN_KINDS),
  so that every command can refuse a directory of another kind;
- `config.toml`: the resolved config of the run;
- `metrics.jsonl`: one JSON object per logged step or epoch;
- `genotypes.jsonl`: the genotype after each epoch;
- `genotype.json`: the final genotype;
- `checkpoint.pt` and `checkpoint.prev.pt`: the newest and the previous checkpoint.

A checkpoint records how long the two logs were when it was written; loading it cuts the logs
back to that length, so a run killed after a checkpoint and resumed from it logs every step once.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
import tomllib
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import torch

from diffnas.runs.config import Config, config_to_toml, load_config
from diffnas.runs.rng import restore_rng

RUN_FILE = "run.json"
CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
GENOTYPES_FILE = "genotypes.jsonl"
GENOTYPE_FILE = "genotype.json"
CHECKPOINT_FILE = "checkpoint.pt"
PREV_CHECKPOINT_FILE = "checkpoint.prev.pt"
LOG_FILES = (METRICS_FILE, GENOTYPES_FILE)
# Keys under which a checkpoint stores the byte sizes of LOG_FILES and the text of config.toml
# when it was written; removed again on load.
LOG_SIZES_KEY = "_rundir_log_sizes"
CONFIG_TEXT_KEY = "_rundir_config"


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked; the message says what to do instead."""


class CheckpointError(RunDirError):
    """A checkpoint that is missing, truncated or corrupt; the message names the file."""


# Each kind of run directory: how it is named in messages, and the command that resumes it
# (formatted with the path and the fields of run.json).
RUN_KINDS = {
    "search": ("a search", "diffnas search --resume {path}"),
    "train": ("a final training", "diffnas train --resume {path}"),
    "random_search": ("a random search", "diffnas random-search --resume {path}"),
    "select": ("a selection", "diffnas select {search} --method {method} --resume --out {path}"),
}


def resolve_out(
    cfg: Config, now: datetime | None = None, kind: str | None = None, dataset: str | None = None
) -> Path:
    """`run.out`, or `runs/<kind>-<dataset>-<YYYYmmdd-HHMMSS>` when it is empty; `kind`
    defaults to the space's name, `dataset` to `data.dataset`."""
    if cfg.run.out:
        return Path(cfg.run.out)
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{kind or cfg.space.name}-{dataset or cfg.data.dataset}-{stamp}"


def file_in_the_way(path: str | Path) -> Path | None:
    """`path` or the first of its parents that exists and is not a directory (so no directory
    can be made there), or None."""
    path = Path(path)
    return next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once the directory entry is on disk; POSIX only.
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(target: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `target` through a temp file in the same directory, fsync, then rename over it."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def _json_default(obj: Any) -> Any:
    # Metrics often arrive as 0-d tensors or numpy scalars; store their values.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} {obj!r} cannot be written as JSON")


class RunDir:
    """One run's directory: config, `metrics.jsonl`, genotype logs and checkpoints."""

    # The append-only logs a checkpoint records the length of (subclasses add their own).
    log_files: tuple[str, ...] = LOG_FILES

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # Set when load_checkpoint had to fall back to checkpoint.prev.pt: the next save must not
        # rotate the unreadable checkpoint.pt over the good previous one.
        self._newest_unreadable = False

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def has_checkpoint(self) -> bool:
        return any((self.path / n).is_file() for n in (CHECKPOINT_FILE, PREV_CHECKPOINT_FILE))

    # -- starting and resuming -----------------------------------------------------------------

    def create(self, cfg: Config, kind: str | None = None, **info: str) -> RunDir:
        """Start a fresh run here: make the directory, write the resolved `config.toml` and,
        given its `kind` (a key of RUN_KINDS; the commands always give it), `run.json` with
        `info` beside it."""
        blocker = file_in_the_way(self.path)
        if blocker is not None:
            what = "it is a file" if blocker == self.path else f"{blocker} is a file"
            raise RunDirError(
                f"cannot create run directory {self.path}: {what}; pick another --out"
            )
        if self.has_checkpoint():
            raise RunDirError(
                f"{self.path} already holds {self.describe()} with a checkpoint; resume it with "
                f"`{self.resume_command()}`, or pass another --out (or delete the directory) to "
                "start a fresh run"
            )
        # The directories this call makes (the run's and any missing parents, outermost first).
        self._made = [p for p in [*reversed(self.path.parents), self.path] if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create run directory {self.path}: {e.strerror}") from None
        # Without a checkpoint nothing here can be resumed; logs of that attempt would only
        # get mixed with the new run's.
        stale = [
            n for n in (RUN_FILE, *self.log_files, GENOTYPE_FILE) if (self.path / n).exists()
        ]
        if stale:
            warnings.warn(
                f"{self.path} has {', '.join(stale)} from a run that never wrote a checkpoint; "
                "starting afresh and discarding them",
                stacklevel=2,
            )
            for name in stale:
                (self.path / name).unlink()
        if kind is not None:
            text = json.dumps({"kind": kind, **info}, indent=2) + "\n"
            _atomic_write(self.path / RUN_FILE, lambda f: f.write(text.encode()))
        _atomic_write(self.path / CONFIG_FILE, lambda f: f.write(config_to_toml(cfg).encode()))
        return self

    def discard_unstarted(self) -> bool:
        """Remove what `create` made when the run stopped before its first checkpoint (a failed
        start or an interrupt): the directory, if `create` made it, else the run's own files.
        True when something was removed. A run with a checkpoint is never touched."""
        made = getattr(self, "_made", None)
        if made is None or self.has_checkpoint():
            return False
        if made:
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in reversed(made[:-1]):  # the parents it made, if nothing else is there
                if parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
            return True
        for name in (RUN_FILE, CONFIG_FILE, *self.log_files, GENOTYPE_FILE):
            (self.path / name).unlink(missing_ok=True)
        return True

    # -- what kind of run ----------------------------------------------------------------------

    def info(self) -> dict[str, str]:
        """run.json, or for directories written before it existed, the kind their files show
        ({} when they show none)."""
        path = self.path / RUN_FILE
        if path.is_file():
            try:
                info = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise RunDirError(
                    f"{path} is corrupt (not JSON); it names the run's kind"
                ) from None
            if isinstance(info, dict) and info.get("kind") in RUN_KINDS:
                moved = "search" in info and not Path(info["search"]).is_dir()
                if moved and (self.path.parent / CONFIG_FILE).is_file():
                    info["search"] = str(self.path.parent)  # moved with its search around it
                return info
            raise RunDirError(f"{path} names no known run kind ({', '.join(RUN_KINDS)})")
        if (self.path / "decisions.jsonl").exists() or self.path.name.startswith("select-"):
            return {
                "kind": "select",
                "method": self.path.name.removeprefix("select-"),
                "search": str(self.path.parent),
            }
        if (self.path / "result.json").exists() or self.path.name.startswith("train-"):
            return {"kind": "train"}
        if (self.path / GENOTYPES_FILE).exists():
            return {"kind": "search"}
        return {}

    def describe(self) -> str:
        """ "a search", "a final training", "a perturbation selection" (or "a run")."""
        info = self.info()
        if not info:
            return "a run"
        if info["kind"] == "select" and info.get("method"):
            return f"a {info['method']} selection"
        return RUN_KINDS[info["kind"]][0]

    def resume_command(self) -> str:
        """The command that resumes this run."""
        info = self.info() or {"kind": "search"}
        quoted = {k: shlex.quote(str(v)) for k, v in info.items()}
        return RUN_KINDS[info["kind"]][1].format(**{**quoted, "path": shlex.quote(str(self.path))})

    def require_kind(self, kind: str, action: str) -> None:
        """Refuse, naming what it is and how it is resumed, a directory of another kind."""
        found = self.info().get("kind")
        if found is not None and found != kind:
            raise RunDirError(
                f"cannot {action} {self.path}: it is {self.describe()}, not "
                f"{RUN_KINDS[kind][0]}; resume it with `{self.resume_command()}`"
            )

    @classmethod
    def open_existing(cls, path: str | Path, kind: str | None = None) -> RunDir:
        """Open a run directory to resume it; it must hold a checkpoint, and be of `kind` when
        one is given (the commands give theirs)."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"cannot resume {run.path}: no such run directory")
        if kind is not None:
            run.require_kind(kind, "resume")
        if not run.has_checkpoint():
            raise CheckpointError(
                f"cannot resume {run.path}: it has no {CHECKPOINT_FILE} (the run stopped before "
                f"its first checkpoint); start it again with --out {run.path}"
            )
        return run

    def read_config(self) -> Config:
        """The run's config, read back from `config.toml`."""
        return load_config(self.path / CONFIG_FILE)

    # -- logs -------------------------------------------------------------------------------------

    def _append_line(self, name: str, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=_json_default) + "\n"
        # One write of a whole line: a kill can tear only the last line, which the next
        # load_checkpoint cuts away.
        with open(self.path / name, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one record (plus its wall-clock `time`) as a JSON line to `metrics.jsonl`."""
        self._append_line(METRICS_FILE, {"time": time.time(), **record})

    def log_genotype(self, epoch: int, genotype_json: Any) -> None:
        """Append the genotype (its JSON form) of `epoch` to `genotypes.jsonl`."""
        self._append_line(
            GENOTYPES_FILE, {"time": time.time(), "epoch": epoch, "genotype": genotype_json}
        )

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of `metrics.jsonl`, oldest first ([] when there is none)."""
        path = self.path / METRICS_FILE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def write_json(self, name: str, obj: Any) -> Path:
        """Write `obj` as the JSON file `name` in the run directory, atomically; return its path."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(obj, indent=2, default=_json_default) + "\n"
        _atomic_write(target, lambda f: f.write(text.encode()))
        return target

    def write_genotype(self, genotype_json: Any) -> Path:
        """Write the final genotype (its JSON form) to `genotype.json`, atomically."""
        return self.write_json(GENOTYPE_FILE, genotype_json)

    # -- checkpoints ------------------------------------------------------------------------------

    def _synced_log_sizes(self) -> dict[str, int]:
        sizes = {}
        for name in self.log_files:
            path = self.path / name
            if not path.exists():
                sizes[name] = 0
                continue
            # The sizes must describe bytes that are on disk, or a crash could leave the logs
            # shorter than the checkpoint says.
            with open(path, "ab") as f:
                os.fsync(f.fileno())
                sizes[name] = os.fstat(f.fileno()).st_size
        return sizes

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        """Write `state` to `checkpoint.pt` atomically; the previous one becomes `.prev.pt`."""
        if LOG_SIZES_KEY in state or CONFIG_TEXT_KEY in state:
            raise ValueError(f"{LOG_SIZES_KEY!r}, {CONFIG_TEXT_KEY!r} are reserved for RunDir")
        payload = {**state, LOG_SIZES_KEY: self._synced_log_sizes()}
        config = self.path / CONFIG_FILE
        if config.is_file():
            payload[CONFIG_TEXT_KEY] = config.read_text(encoding="utf-8")
        target = self.path / CHECKPOINT_FILE
        tmp = target.with_name(f".{CHECKPOINT_FILE}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            # Reading it back now costs little and turns "cannot resume" days later into an
            # error at the line that stored the wrong object.
            try:
                torch.load(tmp, weights_only=True, map_location="cpu")
            except Exception as e:
                raise TypeError(
                    "the checkpoint state would not load with torch.load(weights_only=True): "
                    f"{e}\nStore only tensors, dicts, lists, tuples, numbers, str, bool and None "
                    "(objects through their state_dict(), numpy arrays as tensors or lists)"
                ) from e
            if target.exists() and not self._newest_unreadable:
                os.replace(target, self.path / PREV_CHECKPOINT_FILE)
            os.replace(tmp, target)
            self._newest_unreadable = False
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.path)
        return target

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Load the newest readable checkpoint and cut the logs back to their length at that time.

        Falls back to `checkpoint.prev.pt`, with a warning, when `checkpoint.pt` is unreadable.
        """
        problems = []
        for name in (CHECKPOINT_FILE, PREV_CHECKPOINT_FILE):
            path = self.path / name
            if not path.exists():
                problems.append(f"{path}: not found")
                continue
            try:
                state = torch.load(path, weights_only=True, map_location=map_location)
            except Exception as e:  # torch reports a torn zip or bad pickle in many types
                problems.append(f"{path}: {type(e).__name__}: {e}")
                continue
            if not isinstance(state, dict):
                problems.append(f"{path}: holds a {type(state).__name__}, not a checkpoint dict")
                continue
            if name == PREV_CHECKPOINT_FILE:
                warnings.warn(
                    f"{problems[0]}\nresuming from the previous checkpoint {path} instead; the "
                    "epochs after it will be run again",
                    stacklevel=2,
                )
                self._newest_unreadable = (self.path / CHECKPOINT_FILE).exists()
            self._truncate_logs(state.pop(LOG_SIZES_KEY, None))
            self.checkpoint_config = state.pop(CONFIG_TEXT_KEY, None)
            return state
        if all(p.endswith(": not found") for p in problems):
            raise CheckpointError(
                f"no checkpoint in {self.path} (looked for {CHECKPOINT_FILE} and "
                f"{PREV_CHECKPOINT_FILE}); the run cannot be resumed, start it again with "
                f"--out {self.path}"
            )
        raise CheckpointError(
            f"cannot read any checkpoint in {self.path} ("
            + "; ".join(p.splitlines()[0] for p in problems)
            + "). A checkpoint that is truncated or corrupt was damaged after it was written "
            "(disk full, an interrupted copy): restore it from a backup, or start the run again "
            "with another --out. If the error is about devices, pass a map_location that exists "
            "on this machine."
        )

    def edited_keys(self) -> list[str]:
        """The config keys whose values in config.toml differ from those the loaded checkpoint
        was written with ("space.C: 4 -> 8"); [] when none do or nothing is known."""
        old = getattr(self, "checkpoint_config", None)
        path = self.path / CONFIG_FILE
        if old is None or not path.is_file():
            return []
        try:
            before, now = (_flat(tomllib.loads(t)) for t in (old, path.read_text("utf-8")))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            return []
        return [
            f"{k}: {before.get(k, '(unset)')!r} -> {now.get(k, '(unset)')!r}"
            for k in sorted(before.keys() | now.keys())
            if before.get(k) != now.get(k)
        ]

    def _truncate_logs(self, sizes: Any) -> None:
        if not isinstance(sizes, dict):
            return  # a checkpoint not written by RunDir: nothing to align
        for name in self.log_files:
            size = sizes.get(name)
            path = self.path / name
            if not isinstance(size, int):
                continue
            current = path.stat().st_size if path.exists() else 0
            if current > size:
                os.truncate(path, size)
            elif current < size:
                warnings.warn(
                    f"{path} has {current} bytes, fewer than the {size} it had at the checkpoint; "
                    "some of its lines were lost",
                    stacklevel=3,
                )


def _flat(table: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def restore_state(obj, state: Any, source: str | Path, edited: list[str] = ()) -> None:
    """`obj.load_state_dict(state)`, where a state that does not fit (other sizes, missing or
    extra keys: the model was built from a config.toml edited after the checkpoint was written,
    whose changed keys `edited` names) is a CheckpointError naming the checkpoint's directory."""
    try:
        obj.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        detail = " ".join(line.strip() for line in str(e).strip().splitlines()[:2])
        cause = (
            f"its config.toml was edited after the checkpoint was written ({'; '.join(edited)})"
            if edited
            else "was its config.toml edited after the run started?"
        )
        raise CheckpointError(
            f"the checkpoint in {source} does not fit the model its config.toml builds: {cause}. "
            "Restore those settings to resume; to change the model, start a new run. "
            f"({detail or type(e).__name__})"
        ) from None


def resume_trainer(
    run: RunDir, trainer, epochs: int, log: Callable[[str], None], map_location="cpu"
) -> dict[str, Any]:
    """Resume a final training in `run`: load its newest checkpoint, the trainer's state (its
    "trainer" entry) and the RNG states, and log where it resumes (of `epochs`); the
    checkpoint, whose "epoch" and any loop state the caller reads. Under torchrun rank 0 reads
    the checkpoint (and cuts the logs back to it) and every rank gets its bytes."""
    from diffnas.runs import distributed

    main = distributed.is_main()
    state = distributed.broadcast_object(run.load_checkpoint(map_location) if main else None)
    restore_state(trainer, state["trainer"], run.path, run.edited_keys())
    restore_rng(state["rng"])
    if main:
        log(f"resumed {run.path} at epoch {state['epoch']}/{epochs}")
    return state
