"""Ground-truth CIFAR-10 accuracies of all 15,625 NAS-Bench-201 cells, from AnalogNAS-Bench.

The official NB201/NATS tables are not installable from a registry; AnalogNAS-Bench
(`pip install --no-deps analog-nasbench==0.1.3`) ships real trained accuracies over the same
cell space in one pickle, `analognasbench/data.anb`. We read that pickle with a restricted
unpickler and never import the package (its import needs pandas and pkg_resources).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import io
import itertools
import pickle
import sys
from pathlib import Path

import numpy as np

from diffnas.spaces.genotypes import GenotypeError, NB201Genotype, load_genotype

PACKAGE = "analog-nasbench"
MODULE = "analognasbench"
DATA_FILE = "data.anb"
INSTALL_HINT = f"pip install --no-deps {PACKAGE}==0.1.3"
N_CELLS = 5**6

# NASLib op indices used in the file's keys.
NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
# Key edge order is (0->1, 0->2, 0->3, 1->2, 1->3, 2->3); the NB201 string order is
# (0->1, 0->2, 1->2, 0->3, 1->3, 2->3), so string position k reads key position _KEY_POS[k].
_KEY_POS = (0, 1, 3, 2, 4, 5)
# Scalar metrics besides baseline_accuracy that are worth keeping (a few floats per cell).
EXTRA_METRICS = ("ptq_accuracy", "qat_accuracy", "noisy_accuracy", "analog_accuracy")


class BenchmarkError(Exception):
    """Base class of the benchmark errors."""


class BenchmarkNotFoundError(BenchmarkError, FileNotFoundError):
    """The benchmark package or its data file is not installed where we looked."""


class BenchmarkFormatError(BenchmarkError, ValueError):
    """The benchmark file is corrupt, truncated, or holds something it should not."""


# Stand-ins for the classes of `analognasbench.data`: plain objects with no methods, so unpickling
# only fills their __dict__ and runs no code of ours or of the package.
class _Architecture:
    """Stand-in for analognasbench.data.Architecture."""


class _DriftMeasurement:
    """Stand-in for analognasbench.data.DriftMeasurement."""


# Exactly the globals that data.anb 0.1.3 contains (checked with pickletools); no builtins or
# numpy reconstructors occur, so none are admitted.
_ALLOWED_GLOBALS: dict[tuple[str, str], type] = {
    ("analognasbench.data", "Architecture"): _Architecture,
    ("analognasbench.data", "DriftMeasurement"): _DriftMeasurement,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals, to stand-in classes."""

    def find_class(self, module: str, name: str) -> type:
        """Return the stand-in for an allowed global; refuse every other one."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def default_path() -> Path:
    """Where the installed analog-nasbench keeps data.anb; raises BenchmarkNotFoundError."""
    try:
        # find_spec on a top-level name locates the package without importing it.
        spec = importlib.util.find_spec(MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BenchmarkNotFoundError(
            f"the NAS-Bench-201 table needs the Python package {MODULE!r}, which was not found "
            f"on the sys.path of {sys.executable}; install it with `{INSTALL_HINT}`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DATA_FILE


def is_available() -> bool:
    """Whether the benchmark data file is installed (it is not read here)."""
    try:
        return default_path().is_file()
    except BenchmarkNotFoundError:
        return False


def _package_version() -> str:
    """The installed analog-nasbench version, or 'unknown'."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def _key_to_arch_map() -> dict[tuple[int, ...], str]:
    """Every NASLib op-index 6-tuple mapped to its NB201 arch string."""
    return {
        key: NB201Genotype(tuple(NASLIB_OPS[key[p]] for p in _KEY_POS)).to_string()
        for key in itertools.product(range(len(NASLIB_OPS)), repeat=6)
    }


def _column(keys: list[object], objs: list[object], name: str) -> np.ndarray:
    """Attribute `name` of every cell as a float array; ValueError unless all are in [0, 100]."""
    values = [getattr(o, name, None) for o in objs]
    for key, v in zip(keys, values, strict=True):
        # An exact type test: bools, strings and numpy scalars have no business here.
        if type(v) is not float and type(v) is not int:
            raise ValueError(f"cell {key}: {name} is {v!r}, not a number")
    col = np.array(values, dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(col) & (col >= 0.0) & (col <= 100.0)))
    if bad.size:
        raise ValueError(f"cell {keys[bad[0]]}: {name} is {col[bad[0]]!r}, outside [0, 100]")
    return col


class NB201Table:
    """CIFAR-10 test accuracy (%) of every NB201 cell, with rank and percentile look-ups."""

    def __init__(
        self,
        archs: list[str],
        accuracies: np.ndarray,
        extra: dict[str, np.ndarray] | None = None,
        source: str = "",
    ):
        if len(archs) != len(accuracies) or len(set(archs)) != len(archs):
            raise ValueError("archs must be distinct and match accuracies one to one")
        self._index = {a: i for i, a in enumerate(archs)}
        self._archs = list(archs)
        self._acc = np.asarray(accuracies, dtype=np.float64)
        self._sorted = np.sort(self._acc)
        self._extra = dict(extra or {})
        self.source = source

    @classmethod
    def load(cls, path: str | Path | None = None) -> NB201Table:
        """Read data.anb (default: the installed analog-nasbench) with a restricted unpickler."""
        path = default_path() if path is None else Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BenchmarkNotFoundError(
                f"NAS-Bench-201 table file not found: looked for {path}; "
                f"install it with `{INSTALL_HINT}`"
            ) from None
        except IsADirectoryError:
            raise BenchmarkNotFoundError(
                f"{path} is a directory, not the {DATA_FILE} file; "
                f"install the table with `{INSTALL_HINT}`"
            ) from None
        try:
            raw = _RestrictedUnpickler(io.BytesIO(data)).load()
        except Exception as e:  # any failure inside the unpickler means the bytes are bad
            raise BenchmarkFormatError(
                f"cannot read {path} as an AnalogNAS-Bench table: {type(e).__name__}: {e}"
            ) from None
        del data
        try:
            return cls._from_raw(raw, source=f"AnalogNAS-Bench ({PACKAGE} {_package_version()})")
        except ValueError as e:
            raise BenchmarkFormatError(
                f"{path} is not a valid AnalogNAS-Bench table: {e}"
            ) from None

    @classmethod
    def _from_raw(cls, raw: object, source: str) -> NB201Table:
        """Extract the numbers from the unpickled dict; the raw objects are dropped after."""
        if not isinstance(raw, dict):
            raise ValueError(f"expected a dict of cells, got {type(raw).__name__}")
        if len(raw) != N_CELLS:
            raise ValueError(f"expected {N_CELLS} cells, got {len(raw)}")
        to_arch = _key_to_arch_map()
        keys = list(raw)
        bad_keys = [k for k in keys if k not in to_arch]
        if bad_keys:
            raise ValueError(
                f"key {bad_keys[0]!r} is not a 6-tuple of op indices in [0, {len(NASLIB_OPS)})"
            )
        # Distinct dict keys that are all valid 6-tuples cover every cell exactly once.
        archs = [to_arch[k] for k in keys]
        objs = list(raw.values())
        acc = _column(keys, objs, "baseline_accuracy")
        # A metric is kept only if every cell has it, so its array has no holes.
        extra = {
            m: _column(keys, objs, m) for m in EXTRA_METRICS if all(hasattr(o, m) for o in objs)
        }
        return cls(archs, acc, extra, source=source)

    def __len__(self) -> int:
        return len(self._archs)

    def _idx(self, arch: NB201Genotype | str) -> int:
        """Row of a cell; GenotypeError for a malformed string, KeyError if it is absent."""
        if isinstance(arch, str):
            arch = NB201Genotype.from_string(arch)
        if not isinstance(arch, NB201Genotype):
            raise TypeError(f"expected an NB201Genotype or an NB201 arch string, got {arch!r}")
        s = arch.to_string()
        try:
            return self._index[s]
        except KeyError:
            raise KeyError(s) from None

    def accuracy(self, arch: NB201Genotype | str) -> float:
        """CIFAR-10 test accuracy (%, full precision: `baseline_accuracy`) of a cell."""
        return float(self._acc[self._idx(arch)])

    def metrics(self, arch: NB201Genotype | str) -> dict[str, float]:
        """All kept accuracies of a cell: baseline_accuracy plus the extra metrics present."""
        i = self._idx(arch)
        out = {"baseline_accuracy": float(self._acc[i])}
        out.update({m: float(v[i]) for m, v in self._extra.items()})
        return out

    def percentile(self, arch: NB201Genotype | str) -> float:
        """Percent of all cells with strictly lower accuracy, plus half of those tied with it.

        The tied cells include the cell itself, so the unique best of N cells scores
        100 * (N - 0.5) / N and the unique worst 100 * 0.5 / N; this "mid-rank" definition
        gives every member of a tie the same value.
        """
        a = self._acc[self._idx(arch)]
        lower = np.searchsorted(self._sorted, a, side="left")
        lower_or_equal = np.searchsorted(self._sorted, a, side="right")
        return float(100.0 * (lower + 0.5 * (lower_or_equal - lower)) / len(self._sorted))

    def rank(self, arch: NB201Genotype | str) -> int:
        """1 + the number of cells with strictly higher accuracy (1 = best; ties share a rank)."""
        a = self._acc[self._idx(arch)]
        return int(len(self._sorted) - np.searchsorted(self._sorted, a, side="right") + 1)

    def median_accuracy(self) -> float:
        """The median accuracy (%) over all cells."""
        return float(np.median(self._acc))

    def best(self) -> tuple[str, float]:
        """The most accurate cell and its accuracy (%); the first in file order on a tie."""
        i = int(np.argmax(self._acc))
        return self._archs[i], float(self._acc[i])


@functools.cache
def get_table() -> NB201Table:
    """The installed table, loaded once per process (errors are not cached)."""
    return NB201Table.load()


SOURCE_NOTE = (
    "all 15,625 NB201 cells trained on CIFAR-10 by its authors; not the official NB201 numbers"
)


def describe(arch_or_run_dir: str, table: NB201Table | None = None) -> str:
    """The text of `diffnas bench nb201 ARCH_STRING_OR_RUN_DIR`: accuracy, rank, percentile."""
    genotype = load_genotype(arch_or_run_dir)
    if not isinstance(genotype, NB201Genotype):
        raise GenotypeError(
            f"{arch_or_run_dir} holds a {type(genotype).__name__} (not an NAS-Bench-201 cell); "
            "the NB201 table only covers NB201 cells, so there is no ground truth for it"
        )
    table = get_table() if table is None else table
    arch = genotype.to_string()
    best_arch, best_acc = table.best()
    n = len(table)
    lines = []
    if not arch_or_run_dir.strip().startswith(("|", "{")):
        lines.append(f"run:        {arch_or_run_dir}")
    lines += [
        f"cell:       {arch}",
        f"accuracy:   {table.accuracy(genotype):.2f} % (CIFAR-10 test, full precision)",
        f"rank:       {table.rank(genotype):,} of {n:,} (1 = best)",
        f"percentile: {table.percentile(genotype):.3f} "
        "(percent of cells with lower accuracy, ties count half)",
        f"best cell:  {best_arch} at {best_acc:.2f} %",
        f"source:     {table.source}: {SOURCE_NOTE}",
    ]
    return "\n".join(lines)
