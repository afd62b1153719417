"""Plots and reports of run directories (`diffnas report RUN_DIR`).

viz only reads what a run wrote (config.toml, metrics.jsonl, genotypes.jsonl, genotype.json,
decisions.jsonl, result.json) plus the public op and edge constants of the spaces; it never
builds a model. matplotlib is imported only when a figure is drawn, so this package imports
without it.
"""

from __future__ import annotations

from diffnas.viz.rundata import ReportError, RunData, read_run

__all__ = ["ReportError", "RunData", "read_run", "write_report"]


def write_report(run_dir, out=None):
    """Write the HTML report of `run_dir` (default `run_dir/report/`); the index.html path."""
    from diffnas.viz.report import write_report as _write

    return _write(run_dir, out)
