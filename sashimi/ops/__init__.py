"""Numerical kernels with interchangeable backends (see :mod:`sashimi.ops.cauchy`)."""
from .cauchy import BACKENDS, cauchy, cauchy_backend, cauchy_ref

__all__ = ["BACKENDS", "cauchy", "cauchy_backend", "cauchy_ref"]
