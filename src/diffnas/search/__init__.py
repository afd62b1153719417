"""Search strategies, chosen by name from `STRATEGIES`."""

from diffnas.registry import Registry
from diffnas.search.darts import DartsSearch

STRATEGIES: Registry = Registry("search strategy")
STRATEGIES.add("darts", DartsSearch)

__all__ = ["STRATEGIES", "DartsSearch"]
