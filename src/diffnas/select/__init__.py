"""Selection: turning a trained supernet into a genotype, chosen by name from `SELECTORS`."""

from diffnas.registry import Registry
from diffnas.select.magnitude import magnitude_select

SELECTORS: Registry = Registry("selection method")
SELECTORS.add("magnitude", magnitude_select)

__all__ = ["SELECTORS", "magnitude_select"]
