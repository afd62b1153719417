"""Reading a run directory (search, training or selection) into plain data for the report."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffnas.spaces.genotypes import GenotypeError, genotype_from_json

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
GENOTYPES_FILE = "genotypes.jsonl"
GENOTYPE_FILE = "genotype.json"
DECISIONS_FILE = "decisions.jsonl"
RESULT_FILE = "result.json"
SELECT_PREFIX = "select-"


class ReportError(RuntimeError):
    """A run directory (or a file in it) the report cannot be made from; the message says why."""


@dataclass
class RunData:
    """What a run directory holds, as read from its files."""

    path: Path
    kind: str  # "search", "train" or "select"
    config_text: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)  # "kind": "epoch" records
    history: list[dict[str, Any]] = field(default_factory=list)  # genotypes.jsonl records
    genotype: Any = None  # the final genotype, or the newest one of an unfinished run
    genotype_source: str = ""
    decisions: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    selections: list[RunData] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things the reader should know

    @property
    def name(self) -> str:
        """The directory's name, for headings."""
        return self.path.name or str(self.path)

    def section(self, name: str) -> dict[str, Any]:
        """One `[section]` of the run's config ({} when absent)."""
        value = self.config.get(name)
        return value if isinstance(value, dict) else {}

    def space_name(self) -> str | None:
        """`space.name` of the config, else the family of the genotype (nb201, darts, ...)."""
        name = self.section("space").get("name")
        if isinstance(name, str):
            return name
        return _family(self.genotype)

    def final(self, key: str) -> Any:
        """The newest epoch record's value of `key`, or None."""
        for record in reversed(self.epochs):
            if key in record:
                return record[key]
        return None

    def has(self, key: str) -> bool:
        """Whether any epoch record has `key`."""
        return any(key in r for r in self.epochs)


def _family(genotype: Any) -> str | None:
    from diffnas.spaces.genotypes import genotype_to_json

    if genotype is None:
        return None
    return genotype_to_json(genotype)["space"]


def read_jsonl(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file, one per line; a corrupt line raises ReportError naming
    the file and line, except a torn last line (no newline: the run was killed or is still
    writing it), which is skipped with a note."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"cannot read {path}: {e}") from None
    lines = text.split("\n")
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):  # the last line, without its newline
                notes.append(
                    f"{path.name}: line {n} is incomplete (the run was killed or is "
                    "still writing); skipped"
                )
                continue
            raise ReportError(
                f"{path}: line {n} is not valid JSON ({e.msg}, column {e.colno}): "
                f"{line[:80]!r}{'...' if len(line) > 80 else ''}"
            ) from None
        if not isinstance(record, dict):
            raise ReportError(f"{path}: line {n} holds a {type(record).__name__}, not an object")
        records.append(record)
    return records


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"cannot read {path}: {e}") from None


def _genotype(d: Any, where: str) -> Any:
    if isinstance(d, dict):
        d = {k: v for k, v in d.items() if k != "weights"}
    try:
        return genotype_from_json(d)
    except GenotypeError as e:
        raise ReportError(f"{where}: not a genotype: {e}") from None


def _epoch_records(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # One record per epoch, the newest winning: a run restarted without its logs cut back
    # (by hand, say) must not draw its epochs twice.
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in metrics:
        if r.get("kind") == "epoch" and isinstance(r.get("epoch"), int):
            by_epoch[r["epoch"]] = r
    return [by_epoch[e] for e in sorted(by_epoch)]


def _is_selection(path: Path, result: dict[str, Any] | None) -> bool:
    return (path / DECISIONS_FILE).is_file() or bool(result and "method" in result)


def read_run(path: str | Path, nested: bool = False) -> RunData:
    """Read the run directory `path` (and, for a search, its `select-*/` selections)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: no such run directory")
    notes: list[str] = []
    result = None
    if (path / RESULT_FILE).is_file():
        result = _read_json(path / RESULT_FILE)
        if not isinstance(result, dict):
            raise ReportError(f"{path / RESULT_FILE}: expected a JSON object")
    # A select-*/ directory inside a search is a selection even before it has logged anything.
    selection = nested or _is_selection(path, result)
    metrics_path = path / METRICS_FILE
    if metrics_path.is_file():
        metrics = read_jsonl(metrics_path, notes)
    elif selection:
        metrics = []  # a magnitude selection tunes nothing, so it logs no epochs
    else:
        raise ReportError(
            f"{path} has no {METRICS_FILE}: not a run directory of `diffnas search`, "
            "`diffnas train` or `diffnas select` (or the run has not logged an epoch yet)"
        )
    epochs = _epoch_records(metrics)
    if selection:
        kind = "select"
    elif (result and "test_acc" in result) or any("test_acc" in r for r in epochs):
        kind = "train"
    else:
        kind = "search"
    run = RunData(path=path, kind=kind, epochs=epochs, result=result, notes=notes)

    cfg_path = path / CONFIG_FILE
    if cfg_path.is_file():
        run.config_text = cfg_path.read_text(encoding="utf-8")
        try:
            run.config = tomllib.loads(run.config_text)
        except tomllib.TOMLDecodeError as e:
            raise ReportError(f"{cfg_path}: not valid TOML: {e}") from None
    else:
        notes.append(f"no {CONFIG_FILE} in {path}")

    if (path / GENOTYPES_FILE).is_file():
        run.history = read_jsonl(path / GENOTYPES_FILE, notes)
    if (path / DECISIONS_FILE).is_file():
        run.decisions = read_jsonl(path / DECISIONS_FILE, notes)

    if (path / GENOTYPE_FILE).is_file():
        run.genotype = _genotype(_read_json(path / GENOTYPE_FILE), str(path / GENOTYPE_FILE))
        run.genotype_source = GENOTYPE_FILE
    elif run.history:
        last = run.history[-1]
        where = f"{path / GENOTYPES_FILE} (epoch {last.get('epoch')})"
        run.genotype = _genotype(last.get("genotype"), where)
        run.genotype_source = (
            f"{GENOTYPES_FILE}, epoch {int(last.get('epoch', 0)) + 1}: the run has not finished"
        )
    else:
        notes.append(f"no {GENOTYPE_FILE} and no genotype history in {path}")

    if not nested and kind == "search":
        for sub in sorted(p for p in path.glob(SELECT_PREFIX + "*") if p.is_dir()):
            run.selections.append(read_run(sub, nested=True))
    return run
