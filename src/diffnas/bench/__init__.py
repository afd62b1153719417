"""Ground-truth benchmark tables; so far the NAS-Bench-201 cell space via AnalogNAS-Bench."""

from diffnas.bench.nb201 import (
    BenchmarkError,
    BenchmarkFormatError,
    BenchmarkNotFoundError,
    NB201Table,
    describe,
    get_table,
    is_available,
)

__all__ = [
    "BenchmarkError",
    "BenchmarkFormatError",
    "BenchmarkNotFoundError",
    "NB201Table",
    "describe",
    "get_table",
    "is_available",
]
