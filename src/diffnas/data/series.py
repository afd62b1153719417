"""Multivariate time series from text files: ETT csv, LSTNet .txt/.txt.gz matrices, any CSV.

Every loader returns a `Series`: a float64 matrix [T, N] (rows in file order, i.e. time order),
the column names, and, when the file has a date column, the time step between rows. Formats are
chosen by name from `SERIES_FORMATS`:

- `ett`: the ETT csv files (ETTh1.csv, ETTm1.csv, ...): a header line whose first column is
  `date` (`YYYY-MM-DD HH:MM:SS`), then one numeric column per series;
- `lstnet`: the LSTNet matrices (exchange_rate.txt, electricity.txt.gz, ...): no header, one
  comma-separated row of numbers per time step, optionally gzipped;
- `csv`: any CSV with a header line; the series are the chosen columns (by name, or by 0-based
  index), by default every column except the date column.

Parsing is strict: a ragged row, a value that is not a finite number, an empty file or a missing
column raise `DataFormatError` naming the file and the line; a missing file raises
`DataNotFoundError` naming every place looked at.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from diffnas.data.images import DATA_ENV, DataFormatError, DataNotFoundError
from diffnas.registry import Registry


@dataclass
class Series:
    """A multivariate series held in memory: `values[t, i]` is series i at time step t."""

    values: np.ndarray  # float64 [T, N]
    columns: tuple[str, ...]
    path: Path
    format: str
    step_s: float | None = None  # seconds between rows, read off the date column if any

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[1] != len(self.columns):
            raise ValueError(
                f"{self.path}: values must be [T, {len(self.columns)}], got {self.values.shape}"
            )

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def n_series(self) -> int:
        """Number of series N."""
        return self.values.shape[1]


SeriesLoader = Callable[[Path, Sequence[str], str], Series]
SERIES_FORMATS: Registry[SeriesLoader] = Registry("series format")


def series_candidates(path: str | Path) -> list[Path]:
    """The files `load_series` tries for `path`, in order: the path, the path + `.gz`, and the
    same two under `$DIFFNAS_DATA` when the path is relative."""
    path = Path(path).expanduser()
    bases = [path]
    env = os.environ.get(DATA_ENV)
    if env and not path.is_absolute():
        bases.append(Path(env) / path)
    out: list[Path] = []
    for base in bases:
        for p in (base, base.with_name(base.name + ".gz")):
            if base.suffix != ".gz" or p == base:
                out.append(p)
    return list(dict.fromkeys(out))


def load_series(
    path: str | Path,
    format: str,
    columns: Sequence[str] = (),
    date_column: str = "date",
    hint: str = "",
) -> Series:
    """Load the series file `path` in the registered `format` (ett, lstnet, csv).

    `columns` picks series by header name or 0-based index (empty: all); `date_column` names the
    csv column that holds timestamps rather than a series. `hint` ends the not-found message
    (e.g. which config key sets the path).
    """
    loader = SERIES_FORMATS.get(format)
    candidates = series_candidates(path)
    for p in candidates:
        if p.is_file():
            return loader(p, columns, date_column)
        if p.is_dir():
            raise DataNotFoundError(
                f"series file {str(path)!r} is a directory; point it at the series file in it"
                + (f" ({hint})" if hint else "")
            )
    places = "\n".join(f"  - {p}" for p in candidates)
    env_note = "" if os.environ.get(DATA_ENV) else f" (${DATA_ENV} is not set)"
    raise DataNotFoundError(
        f"series file {str(path)!r} not found. Looked at{env_note}:\n{places}"
        + (f"\n{hint}" if hint else "")
    )


# ----------------------------------------------------------------------------- parsing


def _read_lines(path: Path) -> list[str]:
    """The file's lines (gunzipped when the name ends in .gz), as text."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
                text = f.read()
        else:
            text = path.read_text(encoding="utf-8")
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataFormatError(f"{path}: not a valid gzip file ({e})") from e
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text ({e})") from e
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    return text.removeprefix("\ufeff").splitlines()


def _split_rows(path: Path, lines: list[str], first_line: int) -> tuple[list[list[str]], list[int]]:
    """Comma-separated fields of the non-blank lines, and their 1-based line numbers; every row
    must have as many fields as the first."""
    rows, numbers = [], []
    width = None
    for k, line in enumerate(lines):
        if not line.strip():
            continue  # blank lines (a trailing newline, an empty last line) carry no data
        fields = [f.strip() for f in line.split(",")]
        if width is None:
            width, width_line = len(fields), first_line + k
        elif len(fields) != width:
            raise DataFormatError(
                f"{path}, line {first_line + k}: {len(fields)} values, but line {width_line} "
                f"has {width} (a ragged row)"
            )
        rows.append(fields)
        numbers.append(first_line + k)
    return rows, numbers


def _to_matrix(
    path: Path,
    rows: list[list[str]],
    numbers: list[int],
    names: Sequence[str],
    file_columns: Sequence[int],
) -> np.ndarray:
    """The rows as a float64 matrix; the first missing, non-numeric or non-finite value raises
    an error naming its line and its column in the file (`file_columns`, 0-based)."""
    try:
        values = np.array(rows, dtype=np.float64) if rows else np.zeros((0, len(names)))
        bad = ~np.isfinite(values)
    except ValueError:
        bad = None
    if bad is None or bad.any():
        # The slow path runs only to say exactly where the problem is.
        for fields, line in zip(rows, numbers, strict=True):
            for j, text in enumerate(fields):
                try:
                    ok = np.isfinite(float(text))
                except ValueError:
                    ok = False
                if not ok:
                    what = "an empty value" if not text else f"{text!r} is not a finite number"
                    raise DataFormatError(
                        f"{path}, line {line}, column {file_columns[j] + 1} ({names[j]}): {what}"
                    )
    return values.reshape(len(rows), len(names))


def _select(
    path: Path, header: Sequence[str], columns: Sequence[str], default: Sequence[int]
) -> list[int]:
    """Indices of `columns` (header names first, else 0-based integers); `default` if empty."""
    if not columns:
        return list(default)
    out = []
    for c in columns:
        c = str(c)
        if c in header:
            out.append(list(header).index(c))
        elif c.lstrip("-").isdigit() and 0 <= int(c) < len(header):
            out.append(int(c))
        else:
            raise DataFormatError(
                f"{path} has no column {c!r}; its columns are: {', '.join(header)} "
                f"(or 0-based indices 0..{len(header) - 1})"
            )
    if len(set(out)) != len(out):
        raise DataFormatError(f"{path}: columns {list(columns)} name a column twice")
    return out


def _need_rows(path: Path, rows: list, what: str) -> None:
    if not rows:
        raise DataFormatError(f"{path}: {what}")


def _step_seconds(path: Path, dates: list[str], numbers: list[int]) -> float | None:
    """Seconds between the first two timestamps; None when there are fewer than two."""
    stamps = []
    for text, line in zip(dates[:2], numbers[:2], strict=False):
        try:
            stamps.append(datetime.fromisoformat(text))
        except ValueError:
            raise DataFormatError(
                f"{path}, line {line}: date {text!r} is not a timestamp (YYYY-MM-DD HH:MM:SS)"
            ) from None
    if len(stamps) < 2:
        return None
    step = (stamps[1] - stamps[0]).total_seconds()
    if step <= 0:
        raise DataFormatError(
            f"{path}, line {numbers[1]}: timestamps must increase (step of {step:g} s)"
        )
    return step


def _header_table(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """(header names, data rows as fields, their line numbers) of a CSV with a header line."""
    lines = _read_lines(path)
    start = next((k for k, line in enumerate(lines) if line.strip()), None)
    if start is None:
        raise DataFormatError(f"{path}: the file is empty (expected a header line and rows)")
    header = [h.strip().strip('"') for h in lines[start].split(",")]
    rows, numbers = _split_rows(path, lines[start + 1 :], start + 2)
    _need_rows(path, rows, "a header line but no data rows")
    if len(rows[0]) != len(header):
        raise DataFormatError(
            f"{path}, line {numbers[0]}: {len(rows[0])} values, but the header (line "
            f"{start + 1}) names {len(header)} columns (a ragged row)"
        )
    return header, rows, numbers


def _csv_series(path: Path, columns, date_column: str, fmt: str, need_date: bool) -> Series:
    header, rows, numbers = _header_table(path)
    date_idx = header.index(date_column) if date_column and date_column in header else None
    if need_date and date_idx != 0:
        raise DataFormatError(
            f"{path}: an ETT file's first column is {date_column!r}, found {header[0]!r} "
            "(use format 'csv' for other layouts)"
        )
    chosen = _select(path, header, columns, [j for j in range(len(header)) if j != date_idx])
    if date_idx in chosen:
        raise DataFormatError(f"{path}: column {date_column!r} holds dates, not a series")
    names = [header[j] for j in chosen]
    values = _to_matrix(path, [[r[j] for j in chosen] for r in rows], numbers, names, chosen)
    step = None
    if date_idx is not None:
        step = _step_seconds(path, [r[date_idx] for r in rows[:2]], numbers[:2])
    return Series(values, tuple(names), path, fmt, step)


@SERIES_FORMATS.register("ett")
def load_ett(path: Path, columns: Sequence[str] = (), date_column: str = "date") -> Series:
    """An ETT csv (ETTh1.csv, ETTm2.csv, ...): `date` first, then HUFL ... OT."""
    return _csv_series(path, columns, date_column or "date", "ett", need_date=True)


@SERIES_FORMATS.register("csv")
def load_csv(path: Path, columns: Sequence[str] = (), date_column: str = "date") -> Series:
    """Any CSV with a header line: the chosen columns (default: all but `date_column`)."""
    return _csv_series(path, columns, date_column, "csv", need_date=False)


@SERIES_FORMATS.register("lstnet")
def load_lstnet(path: Path, columns: Sequence[str] = (), date_column: str = "") -> Series:
    """An LSTNet matrix (.txt or .txt.gz): no header, one comma-separated row per time step."""
    rows, numbers = _split_rows(path, _read_lines(path), 1)
    _need_rows(path, rows, "the file is empty (expected comma-separated rows of numbers)")
    header = [str(j) for j in range(len(rows[0]))]
    chosen = _select(path, header, columns, range(len(header)))
    names = [header[j] for j in chosen]
    values = _to_matrix(path, [[r[j] for j in chosen] for r in rows], numbers, names, chosen)
    return Series(values, tuple(names), path, "lstnet", None)
