"""Numerical kernels with interchangeable backends (see :mod:`sashimi.ops.cauchy`)."""
from .cauchy import BACKENDS, backend_report, cauchy, cauchy_backend, cauchy_ref

__all__ = ["BACKENDS", "backend_report", "cauchy", "cauchy_backend", "cauchy_ref"]
