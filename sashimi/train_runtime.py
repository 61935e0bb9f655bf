"""Moved to :mod:`sashimi.train.runtime`; this name keeps older imports working (it is that module)."""
import sys

from .train import runtime as _module

sys.modules[__name__] = _module
