"""How architecture parameters become edge weights: activations chosen by name."""

from diffnas.arch.params import ACTIVATIONS, ArchParameters

__all__ = ["ACTIVATIONS", "ArchParameters"]
