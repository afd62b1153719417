"""Per-epoch ground truth of DARTS searches on the NB201 space, one column per run.

    python benchmarks/nb201_trend.py RUN_DIR [RUN_DIR ...]

Reads each run's metrics.jsonl (epoch records carry `nb201_acc`, the AnalogNAS-Bench CIFAR-10
accuracy of the cell derived at that epoch) and prints a table: epoch, then per run the table
accuracy, the number of skip_connect and parameter-free ops in the cell, and the supernet's
validation accuracy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PARAM_FREE = ("skip_connect", "avg_pool_3x3", "none")


def epoch_records(run: Path) -> list[dict]:
    """The epoch records of one run, in order."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "epoch"]


def main(runs: list[str]) -> None:
    """Print the table."""
    recs = {r: epoch_records(Path(r)) for r in runs}
    n = max(len(v) for v in recs.values())
    print(
        "cells: acc = AnalogNAS-Bench CIFAR-10 %, skip = #skip_connect, free = #param-free ops"
        " (of 6), sup = supernet valid acc %"
    )
    for i, r in enumerate(runs):
        print(f"run {i}: {r}")
    header = "epoch" + "".join(f" | run{i}: acc  skip free  sup" for i in range(len(runs)))
    print(header)
    for e in range(n):
        row = f"{e + 1:>5}"
        for r in runs:
            if e < len(recs[r]):
                rec = recs[r][e]
                ops = [p.split("~")[0] for p in rec["genotype"].split("|") if "~" in p]
                skip = sum(o == "skip_connect" for o in ops)
                free = sum(o in PARAM_FREE for o in ops)
                row += (
                    f" | {rec.get('nb201_acc', float('nan')):>9.2f} {skip:>5} {free:>4}"
                    f" {rec['valid_acc']:>4.1f}"
                )
            else:
                row += " |" + " " * 25
        print(row)
    for i, r in enumerate(runs):
        print(f"run {i} final: {recs[r][-1]['genotype']}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
