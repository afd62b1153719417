"""The NB201 ground-truth table: safe loading, the edge-order mapping, rank and percentile."""

from __future__ import annotations

import itertools
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from diffnas.bench import nb201
from diffnas.bench.nb201 import (
    BenchmarkFormatError,
    BenchmarkNotFoundError,
    NB201Table,
    describe,
    get_table,
    is_available,
)
from diffnas.spaces.genotypes import NB201_OPS, GenotypeError, NB201Genotype

BEST = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|"
    "nor_conv_3x3~2|"
)
NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")

needs_bench = pytest.mark.skipif(not is_available(), reason="analog-nasbench is not installed")


def _key_of(arch: str) -> tuple[int, ...]:
    """The file's key for a cell, written out independently of the module under test."""
    o = [NASLIB_OPS.index(op) for op in NB201Genotype.from_string(arch).ops]
    # string order (0>1, 0>2, 1>2, 0>3, 1>3, 2>3) -> key order (0>1, 0>2, 0>3, 1>2, 1>3, 2>3)
    return (o[0], o[1], o[3], o[2], o[4], o[5])


def _synthetic_pickle(acc_of, n: int | None = None) -> bytes:
    """Pickle a table shaped like data.anb, with the classes named as in analognasbench.data."""
    mod = types.ModuleType("analognasbench.data")

    class Architecture:
        pass

    class DriftMeasurement:
        pass

    for cls in (Architecture, DriftMeasurement):
        cls.__module__ = "analognasbench.data"
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    table = {}
    for key in itertools.islice(itertools.product(range(5), repeat=6), n):
        a = Architecture()
        a.architecture = key
        a.baseline_accuracy = acc_of(key)
        a.ptq_accuracy = 1.0
        d = DriftMeasurement()
        d.value, d.uncertainty = 10.0, 0.0
        a.baseline_drift_60 = d
        table[key] = a
    # pickle checks that each class is importable under its name; the real package needs pandas.
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "analognasbench", types.ModuleType("analognasbench"))
        mp.setitem(sys.modules, "analognasbench.data", mod)
        return pickle.dumps(table, protocol=4)


@pytest.fixture(scope="module")
def tied_file(tmp_path_factory) -> Path:
    """A synthetic table whose accuracy is 10 * (op index on edge 0->1): 5 ties of 3125."""
    path = tmp_path_factory.mktemp("bench") / "tied.anb"
    path.write_bytes(_synthetic_pickle(lambda k: 10.0 * k[0]))
    return path


# --- always run: the loader on crafted files ---------------------------------------------------


def test_forbidden_global_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.anb"
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(BenchmarkFormatError, match="forbidden global os.system") as e:
        NB201Table.load(path)
    assert str(path) in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(print),
        pickle.dumps({"a": np.float64(1.0)}),  # numpy reconstructors are not needed, so refused
        b"\x80\x04\x8c\x13analognasbench.data\x94\x8c\x02os\x94\x93\x94.",  # not in the allow-list
    ],
)
def test_any_other_global_is_refused(tmp_path, payload):
    path = tmp_path / "other.anb"
    path.write_bytes(payload)
    with pytest.raises(BenchmarkFormatError, match="forbidden global"):
        NB201Table.load(path)


def test_truncated_file_names_it(tmp_path, tied_file):
    path = tmp_path / "truncated.anb"
    path.write_bytes(tied_file.read_bytes()[: tied_file.stat().st_size // 2])
    with pytest.raises(BenchmarkFormatError, match="truncated.anb"):
        NB201Table.load(path)
    path.write_bytes(b"")
    with pytest.raises(BenchmarkFormatError, match="truncated.anb"):
        NB201Table.load(path)


def test_wrong_contents_are_format_errors(tmp_path):
    path = tmp_path / "short.anb"
    path.write_bytes(_synthetic_pickle(lambda k: 50.0, n=100))
    with pytest.raises(BenchmarkFormatError, match="expected 15625 cells"):
        NB201Table.load(path)
    path.write_bytes(_synthetic_pickle(lambda k: "93.1"))
    with pytest.raises(BenchmarkFormatError, match="not a number"):
        NB201Table.load(path)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(BenchmarkFormatError, match="dict"):
        NB201Table.load(path)


def test_missing_file_says_where_and_how_to_install(tmp_path):
    path = tmp_path / "nowhere" / "data.anb"
    with pytest.raises(BenchmarkNotFoundError) as e:
        NB201Table.load(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "pip install --no-deps analog-nasbench==0.1.3" in msg


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(nb201.importlib.util, "find_spec", lambda name: None)
    assert not is_available()
    with pytest.raises(BenchmarkNotFoundError, match="pip install --no-deps analog-nasbench"):
        NB201Table.load()


def test_edge_order_mapping_on_synthetic_table(tmp_path):
    # Each cell's accuracy encodes its key, so every look-up checks the mapping.
    def code(k):
        return sum(i * 5**p for p, i in enumerate(k)) / 200.0

    path = tmp_path / "coded.anb"
    path.write_bytes(_synthetic_pickle(code))
    table = NB201Table.load(path)
    assert len(table) == 15625
    asymmetric = ("nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "none")
    for arch in [NB201Genotype(asymmetric), NB201Genotype.from_string(BEST)]:
        assert table.accuracy(arch) == code(_key_of(arch.to_string()))
        assert table.accuracy(arch.to_string()) == table.accuracy(arch)
    assert table.metrics(arch)["ptq_accuracy"] == 1.0
    assert "qat_accuracy" not in table.metrics(arch)  # absent from the file, so not invented


def test_rank_and_percentile_with_ties(tied_file):
    table = NB201Table.load(tied_file)
    top = "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # op 4 on edge 0->1
    bottom = "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # op 0 on edge 0->1
    assert table.accuracy(top) == 40.0 and table.accuracy(bottom) == 0.0
    assert table.rank(top) == 1 and table.rank(bottom) == 4 * 3125 + 1
    # 12500 cells below and 3125 tied (counted half): (12500 + 1562.5) / 15625 = 90 %
    assert table.percentile(top) == pytest.approx(90.0)
    assert table.percentile(bottom) == pytest.approx(10.0)
    assert table.best()[1] == 40.0


def test_absent_and_malformed_archs():
    only = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    table = NB201Table([only], np.array([10.0]))
    other = "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(KeyError, match="skip_connect~0"):
        table.accuracy(other)
    with pytest.raises(GenotypeError):
        table.accuracy("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert table.percentile(f"  {only} ") == 50.0 and table.rank(only) == 1


def test_describe_rejects_darts_run(tmp_path):
    d = {
        "space": "darts",
        "normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
        "normal_concat": [2, 3, 4, 5],
        "reduce": [["max_pool_3x3", 0], ["skip_connect", 1]] * 4,
        "reduce_concat": [2, 3, 4, 5],
    }
    (tmp_path / "genotype.json").write_text(json.dumps(d))
    table = NB201Table([BEST], np.array([94.0]))
    with pytest.raises(GenotypeError, match="not an NAS-Bench-201 cell"):
        describe(str(tmp_path), table)


# --- with the installed AnalogNAS-Bench file ----------------------------------------------------


@pytest.fixture(scope="module")
def table() -> NB201Table:
    return get_table()


@needs_bench
def test_installed_table_size_and_best(table):
    assert len(table) == 15625
    arch, acc = table.best()
    assert arch == BEST and acc == pytest.approx(94.07, abs=0.01)
    assert table.rank(BEST) == 1
    assert table.percentile(BEST) > 99.99
    assert get_table() is table  # cached: a search does not reload it


def _has_path(ops: tuple[str, ...]) -> bool:
    """Whether node 3 is reachable from node 0 through edges whose op is not `none`."""
    reach = {0}
    for (src, dst), op in sorted(zip(NB201Genotype.EDGES, ops, strict=True), key=lambda e: e[0][1]):
        if op != "none" and src in reach:
            reach.add(dst)
    return 3 in reach


@needs_bench
def test_exactly_the_disconnected_cells_sit_at_chance(table):
    chance, disconnected = set(), set()
    for ops in itertools.product(NB201_OPS, repeat=6):
        arch = NB201Genotype(ops).to_string()
        if table.accuracy(arch) == 10.0:
            chance.add(arch)
        if not _has_path(ops):
            disconnected.add(arch)
    assert disconnected and chance == disconnected


@needs_bench
def test_describe_run_dir(tmp_path, table):
    (tmp_path / "genotype.json").write_text(json.dumps({"space": "nb201", "arch": BEST}))
    text = describe(str(tmp_path))
    assert BEST in text and "94.07" in text
    assert "rank:       1 of 15,625" in text
    assert "AnalogNAS-Bench (analog-nasbench 0.1.3)" in text
    assert "not the official NB201 numbers" in text
    plain = describe(BEST)
    assert BEST in plain and "run:" not in plain
