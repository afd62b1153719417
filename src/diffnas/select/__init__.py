"""Selection: turning a trained supernet into a genotype, chosen by name from `SELECTORS`.

Each entry is `select(setup, cfg, run, resume=False, log=print, stop_after=None) -> genotype`:
`setup` is the `SearchSetup` holding the search's supernet (loaded from its checkpoint), `cfg`
the config (its `[select]` section), `run` the selection's run directory. `run_select` builds
the setup and dispatches.
"""

from diffnas.registry import Registry
from diffnas.select.magnitude import magnitude_select
from diffnas.select.run import open_select_dir, perturbation_select, run_select
from diffnas.select.sample_rank import sample_rank_select

SELECTORS: Registry = Registry("selection method")
SELECTORS.add("magnitude", magnitude_select)
SELECTORS.add("perturbation", perturbation_select)
SELECTORS.add("sample_rank", sample_rank_select)  # EN²AS: sample, score, rescore the top

__all__ = [
    "SELECTORS",
    "magnitude_select",
    "open_select_dir",
    "perturbation_select",
    "run_select",
    "sample_rank_select",
]
