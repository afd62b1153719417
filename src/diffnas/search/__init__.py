"""Search strategies, chosen by name from `STRATEGIES`."""

from diffnas.registry import Registry
from diffnas.search.darts import DartsSearch
from diffnas.search.novelty import NoveltySearch
from diffnas.search.single_path import RandomPathSearch

STRATEGIES: Registry = Registry("search strategy")
STRATEGIES.add("darts", DartsSearch)
STRATEGIES.add("novelty", NoveltySearch)  # EN²AS (and EN²AS-PR with a reward weight)
STRATEGIES.add("random_path", RandomPathSearch)  # uniform single-path sampling (SPOS-style)

__all__ = ["STRATEGIES", "DartsSearch", "NoveltySearch", "RandomPathSearch"]
