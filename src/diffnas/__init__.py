"""diffnas: differentiable and one-shot neural architecture search in PyTorch."""

__version__ = "0.1.0"
