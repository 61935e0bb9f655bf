"""Numerical kernels with interchangeable backends (see :mod:`sashimi.ops.cauchy`)."""
from .cauchy import cauchy, cauchy_ref

__all__ = ["cauchy", "cauchy_ref"]
