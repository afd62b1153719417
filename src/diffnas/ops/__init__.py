"""Primitive operations as small modules, chosen by name from `OPS`."""

from diffnas.ops.cnn import OPS, FactorizedReduce, ReLUConvBN, make_op

__all__ = ["OPS", "FactorizedReduce", "ReLUConvBN", "make_op"]
