"""Magnitude selection: read the genotype off the edge weights with the space's DARTS rule."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from diffnas.spaces.genotypes import genotype_to_json

RESULT_FILE = "result.json"


def magnitude_select(
    setup, cfg, run, resume: bool = False, log: Callable[[str], None] = print, stop_after=None
):
    """The space's derivation rule on the supernet's final edge weights (DARTS: top-2 inputs per
    node by strongest non-`none` op, then that op; NB201: argmax per edge); no tuning.

    Writes `genotype.json` and `result.json` (with the edge weights it read) to `run`, and a
    checkpoint marking the selection done. `resume` and `stop_after` change nothing: it is
    one deterministic step.
    """
    del resume, stop_after
    t0 = time.perf_counter()
    strategy = setup.strategy
    genotype = strategy.genotype()
    with torch.no_grad():
        weights = {k: w.cpu().tolist() for k, w in strategy.arch.weights().items()}
    run.write_genotype(genotype_to_json(genotype))
    run.write_json(
        RESULT_FILE,
        {
            "method": "magnitude",
            "genotype": str(genotype),
            "weights": weights,
            "select_time_s": time.perf_counter() - t0,
        },
    )
    run.save_checkpoint({"method": "magnitude", "done": True})
    log(f"magnitude selection: {genotype}")
    return genotype
